// ReDoc for keyrelay's OpenAPI description (loaded from this server; no CDN, no inline script).
(function () {
  var el = document.getElementById("redoc");
  window.Redoc.init(el.getAttribute("data-spec"), {}, el);
})();
