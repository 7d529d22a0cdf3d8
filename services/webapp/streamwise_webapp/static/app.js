// Streamwise web app: shows the current model version and follows it over Server-Sent Events.
(function () {
  "use strict";

  var body = document.body;
  var base = body.dataset.base || "";
  var historyLimit = Number(body.dataset.historyLimit) || 200;

  var LABELS = {
    accuracy: "Accuracy", log_loss: "Log loss", roc_auc: "ROC AUC", macro_f1: "Macro F1",
    mae: "MAE", rmse: "RMSE"
  };

  var points = new Map(); // version -> {version, examples_seen, metrics}
  var current = null;
  var clockOffsetMs = 0; // server clock minus this browser's clock
  var chart = null;
  var pointRadius = 3;
  var historyRequest = null;
  var reconnectTimer = null;

  function el(id) { return document.getElementById(id); }

  function label(name) {
    return LABELS[name] || name.replace(/_/g, " ").replace(/^./, function (c) { return c.toUpperCase(); });
  }

  function formatMetric(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    var size = Math.abs(value);
    return value.toFixed(size >= 100 ? 0 : size >= 10 ? 2 : 3);
  }

  var integer = new Intl.NumberFormat();

  function formatAge(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h ago";
    return Math.floor(h / 24) + " d ago";
  }

  function setConnection(kind, text) {
    var pill = el("connection");
    pill.className = "pill pill-" + kind;
    if (pill.textContent !== text) pill.textContent = text;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // ---- chart -------------------------------------------------------------

  function series(metric) {
    var sorted = Array.from(points.values()).sort(function (a, b) { return a.version - b.version; });
    sorted = sorted.slice(-historyLimit);
    function pick(key) {
      return sorted.map(function (p) {
        var v = p.metrics[key];
        return { x: p.version, y: typeof v === "number" ? v : null };
      });
    }
    return { all: pick(metric), recent: pick(metric + "_recent"), count: sorted.length };
  }

  function renderChart() {
    if (!current || typeof window.Chart === "undefined") return;
    var metric = current.primary_metric;
    var data = series(metric);
    var recentLabel = "last " + integer.format(current.recent_window);
    // Dots only while they do not crowd each other.
    pointRadius = data.count * 14 > el("chart").parentElement.clientWidth ? 0 : 3;
    el("chart-title").textContent = label(metric) + " over versions";

    if (!chart) {
      var Chart = window.Chart;
      Chart.defaults.color = cssVar("--muted");
      Chart.defaults.borderColor = cssVar("--border");
      Chart.defaults.font.family = getComputedStyle(body).fontFamily;
      chart = new Chart(el("chart"), {
        type: "line",
        data: {
          datasets: [
            { label: "all-time", data: data.all, borderColor: cssVar("--accent"),
              backgroundColor: cssVar("--accent"), borderWidth: 2, tension: 0.2, spanGaps: true, clip: 8 },
            { label: recentLabel, data: data.recent, borderColor: cssVar("--accent-2"),
              backgroundColor: cssVar("--accent-2"), borderWidth: 2, borderDash: [6, 4], tension: 0.2, clip: 8,
              spanGaps: true }
          ]
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          // Scriptable, so a changed radius applies on update (plain option values are cached).
          elements: { point: { radius: function () { return pointRadius; } } },
          interaction: { mode: "nearest", axis: "x", intersect: false },
          scales: {
            x: { type: "linear", title: { display: true, text: "version" }, ticks: { precision: 0 } },
            y: { title: { display: true, text: label(metric) } }
          },
          plugins: {
            legend: { position: "bottom", labels: { usePointStyle: true, pointStyle: "line" } },
            tooltip: {
              callbacks: {
                title: function (items) { return items.length ? "v" + items[0].parsed.x : ""; },
                label: function (item) { return item.dataset.label + ": " + formatMetric(item.parsed.y); }
              }
            }
          }
        }
      });
    } else {
      chart.data.datasets[0].data = data.all;
      chart.data.datasets[1].data = data.recent;
      chart.data.datasets[1].label = recentLabel;
      chart.options.scales.y.title.text = label(metric);
    }
    // Bound the version axis to the data, so it does not start at a rounded 0.
    chart.options.scales.x.min = data.count ? data.all[0].x : undefined;
    chart.options.scales.x.max = data.count ? data.all[data.count - 1].x : undefined;
    chart.update("none");

    var last = data.all[data.all.length - 1];
    el("chart").setAttribute("aria-label", label(metric) + " over " + data.count + " versions" +
      (last ? "; v" + last.x + ": " + formatMetric(last.y) : ""));
  }

  function addPoint(p) {
    points.set(p.version, { version: p.version, examples_seen: p.examples_seen, metrics: p.metrics || {} });
    if (points.size > historyLimit * 2) {
      var oldest = Array.from(points.keys()).sort(function (a, b) { return a - b; });
      oldest.slice(0, points.size - historyLimit).forEach(function (v) { points.delete(v); });
    }
  }

  function loadHistory() {
    if (historyRequest) return historyRequest;
    historyRequest = fetch(base + "/api/v1/models/versions?limit=" + historyLimit, {
      headers: { Accept: "application/json" }
    })
      .then(function (response) { return response.ok ? response.json() : []; })
      .then(function (rows) { rows.forEach(addPoint); renderChart(); })
      .catch(function () { /* offline for now: the next live event asks again */ })
      .then(function () { historyRequest = null; });
    return historyRequest;
  }

  // ---- cards -------------------------------------------------------------

  function renderMetricsTable(model) {
    var rows = Object.keys(model.metrics)
      .filter(function (name) { return !/_recent$/.test(name); })
      .sort(function (a, b) {
        if (a === model.primary_metric) return -1;
        if (b === model.primary_metric) return 1;
        return a.localeCompare(b);
      });
    var tbody = el("metrics");
    tbody.replaceChildren.apply(tbody, rows.map(function (name) {
      var tr = document.createElement("tr");
      if (name === model.primary_metric) tr.className = "primary";
      [label(name), formatMetric(model.metrics[name]), formatMetric(model.metrics[name + "_recent"])]
        .forEach(function (text, i) {
          var cell = document.createElement(i === 0 ? "th" : "td");
          if (i === 0) cell.scope = "row";
          cell.textContent = text;
          tr.appendChild(cell);
        });
      return tr;
    }));
    el("recent-head").textContent = "Last " + integer.format(model.recent_window);
  }

  function renderAge() {
    if (!current) return;
    var published = Date.parse(current.published_at);
    el("age").textContent = formatAge(Date.now() + clockOffsetMs - published);
  }

  function renderCurrent(model) {
    var changed = current !== null && current.version !== model.version;
    current = model;
    el("waiting").hidden = true;
    el("current").hidden = false;
    el("version").textContent = String(model.version);
    el("metric-name").textContent = label(model.primary_metric);
    el("metric-value").textContent = formatMetric(model.primary_value);
    el("metric-recent").textContent = "last " + integer.format(model.recent_window) + ": " +
      formatMetric(model.recent_value);
    el("examples").textContent = integer.format(model.examples_seen);
    var published = el("published");
    published.dateTime = model.published_at;
    published.textContent = new Date(model.published_at).toLocaleString();
    renderAge();
    renderMetricsTable(model);
    document.title = "v" + model.version + " · " + model.model + " · Streamwise";
    if (changed) {
      var card = document.querySelector(".stat-version");
      card.classList.remove("flash");
      void card.offsetWidth; // restart the animation
      card.classList.add("flash");
    }
  }

  function onState(state, live) {
    var serverTime = Date.parse(state.server_time);
    if (isFinite(serverTime)) clockOffsetMs = serverTime - Date.now();

    if (state.status === "unavailable") {
      setConnection("bad", "Model store unavailable");
    } else if (live) {
      setConnection("live", "Live");
    }
    if (!state.current) {
      if (!current) {
        el("current").hidden = true;
        el("waiting").hidden = false;
      }
      return;
    }
    var model = state.current;
    var known = Array.from(points.keys());
    var newest = known.length ? Math.max.apply(null, known) : null;
    renderCurrent(model);
    addPoint({ version: model.version, examples_seen: model.examples_seen, metrics: model.metrics });
    renderChart();
    // A jump means versions were published while we were not looking: fetch them.
    if (newest !== null && model.version > newest + 1) loadHistory();
  }

  // ---- live stream ---------------------------------------------------------

  function connect() {
    reconnectTimer = null;
    var source = new EventSource(base + "/api/v1/live");
    source.addEventListener("state", function (event) {
      try {
        onState(JSON.parse(event.data), true);
      } catch (err) {
        setConnection("bad", "Unreadable update");
      }
    });
    source.addEventListener("open", function () {
      setConnection("live", "Live");
      if (!points.size) loadHistory();
    });
    source.addEventListener("error", function () {
      setConnection("pending", "Reconnecting…");
      // The browser retries by itself unless the server answered with an error status.
      if (source.readyState === EventSource.CLOSED && !reconnectTimer) {
        reconnectTimer = setTimeout(connect, 5000);
      }
    });
  }

  // The server renders the state and history into the page, so it shows data before the stream connects.
  function showInitial() {
    var node = el("initial-state");
    var initial = null;
    try {
      initial = node ? JSON.parse(node.textContent) : null;
    } catch (err) {
      initial = null;
    }
    if (!initial) return;
    (initial.history || []).forEach(addPoint);
    onState(initial.state, false);
  }

  showInitial();
  connect();
  setInterval(renderAge, 1000);
})();
