// The operator console's only script (served from this origin; the pages allow no inline script).
// It adds conveniences to pages that work without it, and runs the live logs. Every value from the server is
// written with textContent: never innerHTML, so a hostile name or path stays text.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Filters apply as soon as a choice changes.
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // "Copy" next to a value shown once: copies the text of the element it names.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        button.textContent = "Copied";
      }, function () { /* the clipboard is not available: the value can still be selected by hand */ });
    });
  });

  // The request detail view (live logs, a source's recent requests).
  var dialog = document.getElementById("log-detail");
  var FIELDS = [
    ["ts", "Time (UTC)"], ["status", "Status"], ["upstream_status", "Upstream status"], ["method", "Method"],
    ["path", "Path"], ["door", "Door"], ["workspace_name", "Workspace"], ["workspace_id", "Workspace id"],
    ["source_name", "Source"], ["source_id", "Source id"], ["connector", "Connector"], ["caller", "Caller"],
    ["latency_ms", "Latency (ms)"], ["upstream_latency_ms", "Upstream latency (ms)"], ["bytes_in", "Bytes in"],
    ["bytes_out", "Bytes out"], ["error_code", "Error code"], ["error_message", "Error message"], ["id", "Request id"]
  ];

  function showDetail(entry) {
    if (!dialog) { return; }
    var list = document.getElementById("log-detail-fields");
    list.replaceChildren();
    FIELDS.forEach(function (pair) {
      var value = entry[pair[0]];
      if (value === null || value === undefined || value === "") { return; }
      var dt = document.createElement("dt");
      dt.textContent = pair[1];
      var dd = document.createElement("dd");
      dd.textContent = String(value);
      list.append(dt, dd);
    });
    dialog.showModal();
  }

  function bindRow(tr, entry) {
    tr.addEventListener("click", function () { showDetail(entry); });
    tr.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); showDetail(entry); }
    });
  }

  document.querySelectorAll("tr[data-entry]").forEach(function (tr) {
    var entry;
    try { entry = JSON.parse(tr.getAttribute("data-entry")); } catch (e) { return; }
    bindRow(tr, entry);
  });

  // Live logs: an EventSource on the cookie-authenticated stream, newest rows first.
  var live = document.getElementById("live");
  var tbody = document.getElementById("log-rows");
  if (!live || !tbody) { return; }
  var MAX_ROWS = 500;
  var state = document.getElementById("live-state");
  var pauseButton = document.getElementById("live-pause");
  var empty = document.getElementById("log-empty");
  var paused = false;
  var held = [];

  function setState(text, cls) {
    state.textContent = text;
    state.className = "live-state " + (cls || "");
  }

  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text === null || text === undefined ? "" : String(text);
    return td;
  }

  function ms(value) {  // as the pages write it (doors/console/fmt.py)
    if (value === null || value === undefined) { return "\u2014"; }
    if (value < 10) { return value.toFixed(2) + " ms"; }
    if (value < 1000) { return value.toFixed(0) + " ms"; }
    return (value / 1000).toFixed(1) + " s";
  }

  function pathCell(path, shortPath) {
    var td = document.createElement("td");
    td.className = "mono";
    var span = document.createElement("span");
    span.className = "path";
    span.title = path;
    span.textContent = shortPath || path;
    td.append(span);
    return td;
  }

  function statusCell(code) {
    var td = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "badge " + (code >= 500 ? "bad" : code >= 400 ? "warn" : "ok");
    badge.textContent = String(code);
    td.append(badge);
    return td;
  }

  function row(entry) {
    var tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.className = "fresh";
    tr.append(
      cell(String(entry.ts || "").slice(11, 19), "mono"),
      statusCell(entry.status),
      cell(entry.method),
      pathCell(String(entry.path), entry.short_path),
      cell(entry.door, "hide-phone"),
      cell(entry.workspace_name, "hide-phone"),
      cell(entry.source_name),
      cell(ms(entry.latency_ms), "num"),
      cell(entry.error_code, "hide-phone")
    );
    bindRow(tr, entry);
    return tr;
  }

  function add(entry) {
    tbody.prepend(row(entry));
    while (tbody.rows.length > MAX_ROWS) { tbody.deleteRow(-1); }
    if (empty) { empty.hidden = true; }
  }

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      held.forEach(add);
      held = [];
      setState("live", "on");
    } else {
      setState("paused", "");
    }
  });

  var source = new EventSource(live.getAttribute("data-stream"));
  source.onopen = function () { if (!paused) { setState("live", "on"); } };
  source.onmessage = function (message) {
    var entry;
    try { entry = JSON.parse(message.data); } catch (e) { return; }
    if (paused) {
      held.push(entry);
      if (held.length > MAX_ROWS) { held.shift(); }
      setState("paused: " + held.length + " new", "");
      return;
    }
    add(entry);
  };
  source.addEventListener("ended", function () {
    source.close();
    setState("your session ended: reload the page to sign in again", "off");
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      setState("disconnected: reload the page", "off");
    } else {
      setState("reconnecting\u2026", "off");
    }
  };
}());
