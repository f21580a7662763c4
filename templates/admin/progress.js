/* The live figures of the console's sending page (newsletter/web/admin/sending.py).
   Progressive enhancement only: without this script the page shows the figures as
   of its loading and a 更新 link.  Served by the console as a static file, so the
   page's Content-Security-Policy allows it without 'unsafe-inline'.
   Every few seconds it fetches progress.json (same session, same role check as
   the page) and writes the numbers in place; the polite live region says the
   state in words when it changes, and at most every 30 seconds while sending,
   so a screen reader is not interrupted on every poll. */
(function () {
  "use strict";
  var root = document.getElementById("progress");
  if (!root || !window.fetch) { return; }
  var POLL_MS = 3000, ANNOUNCE_MS = 30000, FINAL = ["done", "cancelled"];
  var words = JSON.parse(root.getAttribute("data-words"));
  var tz = root.getAttribute("data-tz");
  var live = document.getElementById("progress-live");
  var lastStatus = root.getAttribute("data-status");
  var lastAnnounced = 0, lastSaid = "";

  function local(iso) {
    if (!iso) { return ""; }
    var parts = {};
    new Intl.DateTimeFormat("en-GB", {timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23"}).formatToParts(new Date(iso))
      .forEach(function (p) { parts[p.type] = p.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute;
  }
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (m, k) { return k in values ? values[k] : m; });
  }
  function key(name) { return root.querySelector('[data-key="' + name + '"]'); }
  function setText(el, text) { if (el && el.textContent !== text) { el.textContent = text; } }
  function timed(name, iso) {
    var el = key(name);
    if (!el) { return; }
    el.hidden = !iso;
    setText(el, iso ? fill(el.getAttribute("data-template"), {at: local(iso)}) : "");
  }

  function show(p) {
    ["sent", "pending", "deferred", "failed", "skipped", "cancelled"].forEach(function (k) {
      setText(key(k), String(p[k]));
    });
    var rate = key("rate"), minutes = Math.round(p.window_minutes);
    setText(rate, p.per_minute ? fill(rate.getAttribute("data-template"), {rate: p.per_minute.toFixed(1), minutes: minutes})
                               : fill(rate.getAttribute("data-none"), {minutes: minutes}));
    timed("eta", p.eta);
    timed("next_retry", p.next_retry);
    setText(key("at"), fill(words.as_of, {at: local(p.at)}));
    var said = fill(words.summary, {status: words.status[p.status] || p.status, sent: p.sent, pending: p.pending,
                                    deferred: p.deferred, failed: p.failed});
    var now = Date.now();
    if (p.status !== lastStatus || (said !== lastSaid && now - lastAnnounced >= ANNOUNCE_MS)) {
      live.textContent = said;
      lastSaid = said;
      lastAnnounced = now;
    }
    lastStatus = p.status;
    root.setAttribute("data-status", p.status);
  }

  function poll() {
    fetch(root.getAttribute("data-src"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        var type = r.headers.get("Content-Type") || "";
        if (!r.ok || type.indexOf("application/json") !== 0) { throw new Error("stopped"); }  // signed out, gone
        return r.json();
      })
      .then(function (p) {
        show(p);
        if (FINAL.indexOf(p.status) < 0) { window.setTimeout(poll, POLL_MS); }
      })
      .catch(function () { /* the figures stay as they are; the 更新 link still works */ });
  }
  lastAnnounced = Date.now();
  if (FINAL.indexOf(lastStatus) < 0) { window.setTimeout(poll, POLL_MS); }
}());
