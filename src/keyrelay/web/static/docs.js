// Swagger UI for keyrelay's OpenAPI description (loaded from this server; no CDN, no inline script).
(function () {
  var el = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({ url: el.getAttribute("data-spec"), domNode: el, deepLinking: true });
})();
