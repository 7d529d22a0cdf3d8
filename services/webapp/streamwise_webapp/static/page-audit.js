// Audit page: who did what, when and why; filtered by model, action and person.
(function () {
  "use strict";
  var S = window.Streamwise;
  var el = S.el, make = S.make;
  var PAGE = 50;
  var offset = 0;
  var total = 0;

  function details(d) {
    return Object.keys(d || {}).filter(function (k) { return k !== "blob_sha256"; })
      .map(function (k) { return k + "=" + (typeof d[k] === "object" ? JSON.stringify(d[k]) : d[k]); }).join(", ");
  }

  function query() {
    var params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    [["model", "filter-model"], ["action", "filter-action"], ["actor", "filter-actor"]].forEach(function (p) {
      var v = el(p[1]).value.trim();
      if (v) params.set(p[0], v);
    });
    return params.toString();
  }

  function load() {
    S.api("/api/v1/audit?" + query()).then(function (page) {
      total = page.total;
      var tbody = el("audit");
      tbody.replaceChildren.apply(tbody, page.items.length ? page.items.map(function (e) {
        var versions = e.version_from !== null || e.version_to !== null ? "v" + (e.version_from || "–") + " → v" + (e.version_to || "–") : "";
        return make("tr", {}, [
          make("td", {}, [make("time", { dateTime: e.at, text: S.formatTime(e.at) })]),
          make("td", { text: e.actor }), make("td", {}, [make("span", { className: "badge badge-muted", text: e.action })]),
          make("td", { text: e.model || "" }), make("td", { text: versions }), make("td", { text: e.reason }),
          make("td", { className: "mono small", text: details(e.details) })
        ]);
      }) : [make("tr", {}, [make("td", { colspan: "7", className: "muted", text: "Nothing matches." })])]);
      S.text(el("audit-count"), total ? "Entries " + (offset + 1) + "–" + (offset + page.items.length) + " of " + S.integer.format(total) : "No entries");
      el("audit-prev").disabled = offset === 0;
      el("audit-next").disabled = offset + PAGE >= total;
    }).catch(function (err) {
      S.text(el("audit-count"), "Cannot filter so: " + S.describe(err.detail || err.message));
    });
  }

  el("audit-filter").addEventListener("submit", function (event) { event.preventDefault(); offset = 0; load(); });
  el("audit-prev").addEventListener("click", function () { offset = Math.max(0, offset - PAGE); load(); });
  el("audit-next").addEventListener("click", function () { offset += PAGE; load(); });
  load();
  // Actions happen at any time: reload the newest page at most every few seconds.
  var last = 0;
  S.live(["state"], { state: function () {
    if (offset === 0 && Date.now() - last > 3000) { last = Date.now(); load(); }
  } });
})();
