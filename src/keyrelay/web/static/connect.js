// The connect page's optional script (docs/connect.md); every page works without it.
// 1. On the done page, send the result to the app that opened (popup) or framed (iframe) this page, to each of
//    the session's allowed origins only: the browser delivers a message only if the target's origin matches.
// 2. Inside a frame, open the provider's sign-in in a new tab (providers refuse to be framed), then poll this
//    session's status and show the done page here once the account is connected.
// 3. Disable a form's button once it is submitted.
(function () {
  "use strict";

  function json(el, name, fallback) {
    try { return JSON.parse(el.getAttribute(name) || ""); } catch (e) { return fallback; }
  }

  var result = document.getElementById("connect-result");
  if (result) {
    var message = json(result, "data-result", null);
    var origins = json(result, "data-origins", []);
    var targets = [];
    if (window.opener && window.opener !== window) { targets.push(window.opener); }
    if (window.parent && window.parent !== window) { targets.push(window.parent); }
    targets.forEach(function (target) {
      origins.forEach(function (origin) {
        try { target.postMessage(message, origin); } catch (e) { /* closed or cross-origin: nothing to do */ }
      });
    });
    var next = result.getAttribute("data-next");
    if (!targets.length && next) { window.location.replace(next); }
  }

  var framed = window.parent && window.parent !== window;
  document.querySelectorAll("form").forEach(function (form) {
    var oauth = form.hasAttribute("data-oauth");
    if (framed && oauth) { form.target = "_blank"; }
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (button && button.getAttribute("data-busy")) {
        window.setTimeout(function () { button.disabled = true; button.textContent = button.getAttribute("data-busy"); }, 0);
      }
      if (framed && oauth) { waitForConnection(form.getAttribute("action")); }
    });
  });

  function waitForConnection(action) {
    var base = action.replace(/\/[^/]+\/oauth$/, "");  // /connect/<token>
    var tries = 0;
    var timer = window.setInterval(function () {
      tries += 1;
      if (tries > 600) { window.clearInterval(timer); return; }
      var xhr = new XMLHttpRequest();
      xhr.open("GET", base + "/status");
      xhr.onload = function () {
        var state = null;
        try { state = JSON.parse(xhr.responseText).status; } catch (e) { return; }
        if (state === "connected") { window.clearInterval(timer); window.location.replace(base + "/done"); }
        if (state === "expired") { window.clearInterval(timer); window.location.reload(); }
      };
      xhr.send();
    }, 2000);
  }
}());
