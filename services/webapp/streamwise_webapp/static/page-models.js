// Models page: champion and challengers, each model's metric over time with publications,
// promotions/rollbacks and drifts marked, versions with lineage, and the operator's actions.
(function () {
  "use strict";
  var S = window.Streamwise;
  var el = S.el, make = S.make;
  var canOperate = false;
  var roster = [];
  var series = {}; // model -> metric points
  var markers = []; // {x, kind, label}
  var chart = null;
  var metric = null;
  var selected = document.body.dataset.model;
  var pending = null; // the action the confirmation dialog is about
  var PAGE = 30; // versions a page
  var before = null; // the versions page shown: versions below this one (null: the newest)
  var newerPages = []; // the cursors of the pages before it, to go back
  var olderPage = null; // the cursor of the next (older) page; null on the last one
  var DELETED = "Deleted by retention: its blob is no longer stored, so it cannot be served again.";
  var COLORS = ["--accent", "--accent-2", "--ok", "--warn", "--muted"];

  function short(sha) { return sha ? sha.slice(0, 10) : "–"; }

  function offsetsText(o) {
    if (!o) return "–";
    return Object.keys(o).map(function (k) { return k.split(".").pop() + " " + o[k]; }).join(", ");
  }

  // ---- confirmation ---------------------------------------------------------------

  function confirmAction(title, description, run) {
    pending = run;
    S.text(el("confirm-title"), title);
    S.text(el("confirm-text"), description);
    el("confirm-reason").value = "";
    el("confirm-error").hidden = true;
    el("confirm").showModal();
    el("confirm-reason").focus();
  }

  el("confirm-cancel").addEventListener("click", function () { el("confirm").close(); });
  el("confirm-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var reason = el("confirm-reason").value.trim();
    if (!reason) {
      S.text(el("confirm-error"), "Say why: it goes into the audit log.");
      el("confirm-error").hidden = false;
      return;
    }
    el("confirm-ok").disabled = true;
    pending(reason).then(function (message) {
      el("confirm").close();
      S.toast(message, "ok");
      refresh();
    }).catch(function (err) {
      // A 404 without a reason of its own: a route this server does not have yet.
      var missing = err.status === 404 && err.detail === "Not Found";
      S.text(el("confirm-error"), missing ? "Not available yet on this server." : (err.message || String(err)));
      el("confirm-error").hidden = false;
    }).then(function () { el("confirm-ok").disabled = false; });
  });

  // ---- roster -----------------------------------------------------------------------

  function renderRoster() {
    var tbody = el("roster");
    S.text(el("roster-metric"), S.metricLabel(metric || "accuracy"));
    tbody.replaceChildren.apply(tbody, roster.map(function (m) {
      var actions = [];
      if (canOperate && m.role === "challenger") {
        actions.push(make("button", { type: "button", className: "button-quiet", text: "Make champion",
          onclick: function () {
            confirmAction("Make " + m.name + " the champion?", m.name + " will serve every prediction.", function (reason) {
              return S.api("/api/v1/models/" + encodeURIComponent(m.name) + "/champion", { method: "POST", body: { reason: reason } })
                .then(function () { return m.name + " is the champion."; });
            });
          } }));
        actions.push(make("button", { type: "button", className: "button-bad", text: "Retire",
          onclick: function () {
            confirmAction("Retire " + m.name + "?", "It stops learning; its versions stay in the registry.", function (reason) {
              return S.api("/api/v1/challengers/" + encodeURIComponent(m.name), { method: "DELETE", body: { reason: reason } })
                .then(function () { return m.name + " retired."; });
            });
          } }));
      }
      return make("tr", { className: m.role === "champion" ? "primary" : "" }, [
        make("th", { scope: "row", text: m.name }),
        make("td", {}, [make("span", { className: "badge badge-" + (m.role === "champion" ? "calm" : "muted"), text: m.role })]),
        make("td", { text: m.kind }),
        make("td", { text: m.version ? "v" + m.version : "–" }),
        make("td", { text: m.examples_seen === null ? "–" : S.integer.format(m.examples_seen) }),
        make("td", { text: S.formatMetric(m.metrics[metric || "accuracy"]) }),
        make("td", { text: m.status }),
        make("td", {}, actions)
      ]);
    }));
    var select = el("versions-select");
    var names = roster.map(function (m) { return m.name; });
    if (names.join() !== Array.from(select.options).map(function (o) { return o.value; }).join()) {
      select.replaceChildren.apply(select, names.map(function (n) { return make("option", { value: n, text: n, selected: n === selected }); }));
    }
  }

  // ---- chart ------------------------------------------------------------------------

  var markerPlugin = {
    id: "streamwiseMarkers",
    afterDatasetsDraw: function (c) {
      var x = c.scales.x, area = c.chartArea, ctx = c.ctx;
      markers.forEach(function (m) {
        if (m.x < x.min || m.x > x.max) return;
        var px = x.getPixelForValue(m.x);
        ctx.save();
        ctx.strokeStyle = m.kind === "drift" ? S.cssVar("--bad") : S.cssVar("--muted");
        ctx.setLineDash(m.kind === "drift" ? [] : [5, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.restore();
      });
    }
  };

  function metricNames() {
    var names = new Set();
    Object.keys(series).forEach(function (model) {
      series[model].forEach(function (p) { Object.keys(p.metrics).forEach(function (k) { names.add(k); }); });
    });
    return Array.from(names).sort();
  }

  function renderChart() {
    if (typeof window.Chart === "undefined") return;
    var names = metricNames();
    if (!metric || names.indexOf(metric) < 0) metric = ["accuracy", "mae"].filter(function (n) { return names.indexOf(n) >= 0; })[0] || names[0] || "accuracy";
    var select = el("metric-select");
    if (names.join() !== Array.from(select.options).map(function (o) { return o.value; }).join()) {
      select.replaceChildren.apply(select, names.map(function (n) { return make("option", { value: n, text: S.metricLabel(n), selected: n === metric }); }));
    }
    var datasets = Object.keys(series).map(function (model, i) {
      var color = S.cssVar(COLORS[i % COLORS.length]);
      return {
        label: model, borderColor: color, backgroundColor: color, borderWidth: 2, tension: 0, spanGaps: true,
        pointRadius: series[model].length > 80 ? 0 : 3,
        data: series[model].map(function (p) {
          var v = p.metrics[metric];
          return { x: Date.parse(p.at), y: typeof v === "number" ? v : null, version: p.version, status: p.status };
        })
      };
    });
    if (!chart) {
      var Chart = window.Chart;
      Chart.defaults.color = S.cssVar("--muted");
      Chart.defaults.borderColor = S.cssVar("--border");
      Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      chart = new Chart(el("chart"), {
        type: "line",
        data: { datasets: datasets },
        plugins: [markerPlugin],
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          interaction: { mode: "nearest", intersect: false },
          scales: {
            x: { type: "linear", ticks: { maxTicksLimit: 6, callback: function (v) { return new Date(v).toLocaleTimeString(); } } },
            y: { title: { display: true, text: S.metricLabel(metric) } }
          },
          plugins: {
            legend: { position: "bottom" },
            tooltip: { callbacks: {
              title: function (items) { return items.length ? new Date(items[0].parsed.x).toLocaleString() : ""; },
              label: function (item) {
                var raw = item.raw;
                return item.dataset.label + " v" + raw.version + (raw.status === "held_back" ? " (held back)" : "") + ": " + S.formatMetric(raw.y);
              }
            } }
          }
        }
      });
    } else {
      chart.data.datasets = datasets;
      chart.options.scales.y.title.text = S.metricLabel(metric);
    }
    // The time axis spans the publications and the marked events after the first one.
    var xs = [];
    datasets.forEach(function (d) { d.data.forEach(function (p) { xs.push(p.x); }); });
    var lo = xs.length ? Math.min.apply(null, xs) : undefined;
    markers.forEach(function (m) { if (lo !== undefined && m.x >= lo) xs.push(m.x); });
    chart.options.scales.x.min = lo;
    chart.options.scales.x.max = xs.length ? Math.max.apply(null, xs) : undefined;
    chart.update("none");
    var count = datasets.reduce(function (n, d) { return n + d.data.length; }, 0);
    el("chart").setAttribute("aria-label", S.metricLabel(metric) + " of " + datasets.length + " model(s) over " + count +
      " published versions, " + markers.length + " marked events");
  }

  el("metric-select").addEventListener("change", function (e) { metric = e.currentTarget.value; renderChart(); renderRoster(); });

  // ---- versions ---------------------------------------------------------------------

  // The version the model serves now: from the roster, as it may be on another page.
  function servedVersion(rows) {
    var model = roster.filter(function (m) { return m.name === selected; })[0];
    if (model && model.version) return model.version;
    var current = rows.filter(function (r) { return r.current; })[0];
    return current ? current.version : null;
  }

  function moveButton(r, served) {
    var action = r.version < served ? "rollback" : "promote";
    var button = make("button", {
      type: "button", className: action === "promote" ? "button-primary" : "button-quiet", "data-action": action,
      "data-version": String(r.version), text: (action === "promote" ? "Promote to v" : "Roll back to v") + r.version,
      disabled: !r.stored, title: r.stored ? null : DELETED,
      onclick: function () {
        confirmAction((action === "promote" ? "Promote " : "Roll back ") + selected + " to v" + r.version + "?",
          "Every predictor switches from v" + served + " to v" + r.version + " within a poll interval.",
          function (reason) {
            return S.api("/api/v1/models/" + encodeURIComponent(selected) + "/" + action, { method: "POST", body: { version: r.version, reason: reason } })
              .then(function (moved) { return selected + " now serves v" + moved.version_to + "."; });
          });
      }
    });
    // A disabled button gets no pointer events in some browsers: the tooltip sits on a wrapper too.
    return r.stored ? button : make("span", { title: DELETED }, [button]);
  }

  function pinButton(r) {
    var action = r.pinned ? "unpin" : "pin";
    return make("button", {
      type: "button", className: "button-quiet", "data-action": action, "data-version": String(r.version),
      text: r.pinned ? "Unpin" : "Pin",
      onclick: function () {
        confirmAction((r.pinned ? "Unpin " : "Pin ") + selected + " v" + r.version + "?",
          r.pinned ? "Retention may delete its blob again at the next pruning."
            : "Retention keeps its blob, whatever its age, until it is unpinned.",
          function (reason) {
            return S.api("/api/v1/models/" + encodeURIComponent(selected) + "/versions/" + r.version + "/" + action,
              { method: "POST", body: { reason: reason } })
              .then(function () { return selected + " v" + r.version + (r.pinned ? " unpinned." : " pinned."); });
          });
      }
    });
  }

  function blobBadge(r) {
    if (r.pinned) return make("span", { className: "badge badge-calm", title: "Retention keeps it.", text: "pinned" });
    if (r.stored) return make("span", { className: "badge badge-muted", text: "stored" });
    return make("span", { className: "badge badge-alert", title: DELETED, text: "deleted" });
  }

  function renderVersions(rows) {
    S.text(el("versions-model"), selected);
    var tbody = el("versions");
    var served = servedVersion(rows);
    tbody.replaceChildren.apply(tbody, rows.map(function (r) {
      var actions = [];
      if (canOperate && served && !r.current) actions.push(moveButton(r, served));
      if (canOperate && (r.stored || r.pinned)) actions.push(pinButton(r));
      var status = r.current ? "serving" : r.status === "held_back" ? "held back" : "published";
      return make("tr", { className: r.current ? "primary" : "" }, [
        make("th", { scope: "row", text: "v" + r.version }),
        make("td", {}, [make("time", { dateTime: r.created_at, text: S.formatTime(r.created_at) })]),
        make("td", { title: r.hold_reason || "" }, [make("span", { className: "badge badge-" + (r.current ? "calm" : r.status === "held_back" ? "alert" : "muted"), text: status })]),
        make("td", {}, [blobBadge(r)]),
        make("td", { text: S.integer.format(r.examples_seen) }),
        make("td", { text: S.formatMetric(r.metrics[metric || "accuracy"]) }),
        make("td", { className: "mono", text: offsetsText(r.offsets_from) + " → " + offsetsText(r.offsets_to) }),
        make("td", { className: "mono", text: short(r.spec_sha256) }),
        make("td", {}, actions)
      ]);
    }));
  }

  function renderPager(rows) {
    el("versions-newer").disabled = before === null;
    el("versions-older").disabled = olderPage === null;
    S.text(el("versions-range"), rows.length ? "v" + rows[0].version + " – v" + rows[rows.length - 1].version : "No versions");
  }

  el("versions-select").addEventListener("change", function (e) {
    selected = e.currentTarget.value;
    before = null;
    newerPages = [];
    loadVersions();
  });
  el("versions-older").addEventListener("click", function () {
    if (olderPage === null) return;
    newerPages.push(before);
    before = olderPage;
    loadVersions();
  });
  el("versions-newer").addEventListener("click", function () {
    if (!newerPages.length) return;
    before = newerPages.pop();
    loadVersions();
  });

  function loadVersions() {
    var query = "?limit=" + PAGE + (before === null ? "" : "&before=" + before);
    var path = "/api/v1/models/" + encodeURIComponent(selected) + "/versions" + query;
    return S.api(path, { withHeaders: true }).then(function (page) {
      var next = page.headers.get("X-Next-Before");
      olderPage = next ? Number(next) : null;
      renderVersions(page.data);
      renderPager(page.data);
    });
  }

  // ---- data -------------------------------------------------------------------------

  function loadMarkers() {
    var audit = S.api("/api/v1/audit?limit=200").then(function (page) {
      return page.items.filter(function (e) { return ["promote", "rollback", "champion_changed"].indexOf(e.action) >= 0; })
        .map(function (e) { return { x: Date.parse(e.at), kind: e.action, label: e.action + " by " + e.actor }; });
    });
    var drifts = S.api("/api/v1/drifts?limit=200").then(function (rows) {
      return rows.map(function (d) { return { x: Date.parse(d.detected_at), kind: "drift", label: "drift in " + d.model }; });
    }).catch(function (err) { if (err.status === 404) return []; throw err; });
    return Promise.all([audit, drifts]).then(function (r) { markers = r[0].concat(r[1]); });
  }

  function refresh() {
    return S.api("/api/v1/models").then(function (models) {
      roster = models;
      var hasChallengers = models.some(function (m) { return m.role === "challenger"; });
      el("challengers-note").hidden = hasChallengers;
      S.text(el("challengers-note"), "No challenger is learning beside the champion.");
      return Promise.all(models.map(function (m) {
        return S.api("/api/v1/models/" + encodeURIComponent(m.name) + "/metrics?limit=500").then(function (points) { series[m.name] = points; });
      }).concat([loadMarkers(), loadVersions()]));
    }).then(function () { renderChart(); renderRoster(); })
      .catch(function (err) { S.toast("Could not load models: " + (err.message || err), "bad"); });
  }

  // ---- challengers ------------------------------------------------------------------

  el("add-challenger").addEventListener("click", function () {
    el("challenger-error").hidden = true;
    el("challenger").showModal();
    el("challenger-name").focus();
  });
  el("challenger-cancel").addEventListener("click", function () { el("challenger").close(); });
  el("challenger-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var name = el("challenger-name").value.trim();
    var spec;
    try { spec = JSON.parse(el("challenger-spec").value); } catch (err) {
      S.text(el("challenger-error"), "The spec is not valid JSON: " + err.message);
      el("challenger-error").hidden = false;
      return;
    }
    spec.name = name;
    S.api("/api/v1/challengers", { method: "POST", body: { name: name, spec: spec, start: { from: el("challenger-start").value } } })
      .then(function () { el("challenger").close(); S.toast(name + " is learning beside the champion.", "ok"); refresh(); })
      .catch(function (err) {
        S.text(el("challenger-error"), err.status === 404 ? "Challengers are not available on this server yet." : S.describe(err.detail || err.message));
        el("challenger-error").hidden = false;
      });
  });

  // ---- start ------------------------------------------------------------------------

  // New versions can come many times a second: reload at most every few seconds.
  var lastVersion = null;
  var timer = null;
  function later() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 2500);
  }
  S.whoami().then(function (who) {
    canOperate = !!(who && who.can.operate);
    return refresh();
  }).then(function () {
    S.live(["state"], {
      state: function (state) {
        var v = state.current ? state.current.version : null;
        if (lastVersion !== null && v !== lastVersion) later();
        lastVersion = v;
      }
    });
  });
})();
