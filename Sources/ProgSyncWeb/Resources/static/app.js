// Live updates: the node's change stream as server-sent events. Cells marked
// data-record/data-field show a partner's change without a reload; an open edit form is warned
// when a field it edits changes underneath it (the server refuses the save too).
(function () {
  "use strict";
  var body = document.body;
  if (!window.EventSource || body.getAttribute("data-live") !== "on") return;
  var base = body.getAttribute("data-base") || "";
  var statuses = {};
  try { statuses = JSON.parse(body.getAttribute("data-statuses") || "{}"); } catch (e) { statuses = {}; }
  var live = document.getElementById("live-status");

  function cells(record, field) {
    var all = document.querySelectorAll("td[data-field]");
    var out = [];
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-record") === record && all[i].getAttribute("data-field") === field) out.push(all[i]);
    }
    return out;
  }

  function show(cell, field, value) {
    if (field === "status") {
      var s = statuses[value] || statuses[""];
      if (s) {
        var swatch = cell.querySelector(".swatch");
        if (swatch) swatch.style.background = s.colour;
        var symbol = cell.querySelector(".symbol");
        if (symbol) symbol.textContent = s.symbol;
        var label = cell.querySelector(".label");
        if (label) label.textContent = s.label;
      }
    } else {
      var text = cell.querySelector(".label") || cell;
      text.textContent = typeof value === "string" ? value : JSON.stringify(value);
    }
    cell.classList.add("live-changed");
  }

  function warnForms(record, field, data) {
    var forms = document.querySelectorAll("form.edit");
    for (var i = 0; i < forms.length; i++) {
      var form = forms[i];
      if (form.getAttribute("data-record") !== record) continue;
      if (!form.querySelector("[data-field='" + field + "']")) continue;
      var warn = form.querySelector(".warn");
      if (warn) warn.textContent = (body.getAttribute("data-changed-meanwhile") || "") + " (" + data.author + ", " + data.org + ")";
    }
  }

  // One stream per open page: closed when the page is left, so streams of pages gone (or kept
  // in the back-forward cache) never hold the browser's few connections per server.
  var source = null;
  function connect() {
    if (source) return;
    source = new EventSource(base + "/events");
    source.addEventListener("commit", onCommit);
  }
  window.addEventListener("pagehide", function () { if (source) { source.close(); source = null; } });
  window.addEventListener("pageshow", connect);
  connect();

  function onCommit(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    var mine = data.author === body.getAttribute("data-me");
    var changed = 0;
    (data.changes || []).forEach(function (c) {
      var found = cells(c.record, c.field);
      found.forEach(function (cell) { show(cell, c.field, c.value); changed++; });
      if (!mine) warnForms(c.record, c.field, data);
    });
    if (changed && live) live.textContent = body.getAttribute("data-live-changed") + ": " + data.org;
  }
})();
