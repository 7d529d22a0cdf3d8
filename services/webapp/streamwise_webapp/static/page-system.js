// System page: health of every service, consumer lag, throughput, freshness, dead letters; live.
(function () {
  "use strict";
  var S = window.Streamwise;
  var el = S.el, make = S.make;
  var filterTimer = null;

  function rate(v) { return typeof v === "number" ? (v < 10 ? v.toFixed(1) : Math.round(v)) + " /s" : "–"; }

  function pairs(node, rows) {
    var children = [];
    rows.forEach(function (r) { children.push(make("dt", { text: r[0] }), make("dd", { text: r[1] })); });
    node.replaceChildren.apply(node, children);
  }

  function render(state) {
    var list = el("services");
    list.replaceChildren.apply(list, state.services.map(function (s) {
      var ok = s.healthy && s.ready !== false;
      var label = !s.healthy ? "down" : s.ready === false ? "not ready" : "up";
      return make("li", { className: "service " + (ok ? "ok" : "bad") }, [
        make("span", { className: "dot", "aria-hidden": "true" }),
        make("strong", { text: s.name }),
        make("span", { className: "badge badge-" + (ok ? "calm" : "alert"), text: label }),
        make("span", { className: "muted", text: s.latency_ms !== null ? Math.round(s.latency_ms) + " ms" : "" }),
        s.problem ? make("span", { className: "muted small", text: s.problem }) : null
      ]);
    }));
    var checked = el("checked-at");
    checked.dateTime = state.checked_at;
    S.text(checked, new Date(state.checked_at).toLocaleTimeString());
    S.text(el("kafka-status"), state.kafka.connected ? "connected" : (state.kafka.problem || "not connected"));
    var t = state.throughput;
    pairs(el("throughput"), [
      ["events arriving", rate(t.events_observed_per_s)], ["events accepted by ingest", rate(t.ingest_events_per_s)],
      ["labels accepted by ingest", rate(t.ingest_labels_per_s)], ["predictions served", rate(t.predictions_per_s)],
      ["examples learned", rate(t.learned_per_s)]
    ]);
    var f = state.freshness;
    pairs(el("freshness"), [
      ["last version", S.formatSeconds(f.last_s)], ["median (" + f.samples + " versions)", S.formatSeconds(f.median_s)],
      ["worst", S.formatSeconds(f.max_s)], ["learned → published (trainer)", S.formatSeconds(f.learned_to_published_s)],
      ["created → served (predictor)", S.formatSeconds(f.created_to_served_s)], ["age of the served version", S.formatSeconds(f.served_model_age_s)]
    ]);
    var lag = el("lag");
    lag.replaceChildren.apply(lag, state.lag.length ? state.lag.map(function (l, i) {
      // Rows come grouped by model: its name stands out on the group's first row.
      var first = i === 0 || state.lag[i - 1].model !== l.model;
      return make("tr", {}, [
        make("th", { scope: "row", className: first ? "" : "muted", text: l.model || "–" }),
        make("td", { text: l.topic }), make("td", { text: String(l.partition) }), make("td", { text: S.integer.format(l.lag) })
      ]);
    }) : [make("tr", {}, [make("td", { colspan: "4", className: "muted", text: "No lag reported (the trainer is down or not consuming yet)." })])]);
    var reasons = Object.keys(state.dead_letters.by_reason).map(function (r) { return r + ": " + state.dead_letters.by_reason[r]; });
    S.text(el("dead-summary"), S.integer.format(state.dead_letters.total) + " dead letters" + (reasons.length ? " — " + reasons.join(", ") : ""));
  }

  function loadDead() {
    var reason = el("dead-filter").value.trim();
    S.api("/api/v1/dead-letters?limit=100" + (reason ? "&reason=" + encodeURIComponent(reason) : "")).then(function (rows) {
      var tbody = el("dead");
      tbody.replaceChildren.apply(tbody, rows.length ? rows.map(function (d) {
        return make("tr", {}, [
          make("td", {}, [make("time", { dateTime: d.at, text: S.formatTime(d.at) })]),
          make("td", { className: "mono", text: d.topic.split(".").pop() + " " + d.partition + "@" + d.offset }),
          make("td", { text: d.consumer }),
          make("td", { text: d.reason }),
          make("td", { className: "mono clip", title: d.value_preview, text: d.value_preview })
        ]);
      }) : [make("tr", {}, [make("td", { colspan: "5", className: "muted", text: "No dead letters." })])]);
    }).catch(function (err) { S.toast("Dead letters: " + (err.message || err), "bad"); });
  }

  el("dead-filter").addEventListener("input", function () {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadDead, 300);
  });

  var lastTotal = null;
  S.api("/api/v1/system").then(function (state) {
    render(state);
    lastTotal = state.dead_letters.total;
    loadDead();
    S.live(["system"], {
      system: function (state) {
        render(state);
        if (state.dead_letters.total !== lastTotal) { lastTotal = state.dead_letters.total; loadDead(); }
      }
    });
  }).catch(function (err) { S.toast("Could not load the system state: " + (err.message || err), "bad"); });
})();
