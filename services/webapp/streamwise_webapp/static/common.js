// Streamwise web app: what every page shares (who is signed in, JSON calls, the live stream).
(function () {
  "use strict";

  var body = document.body;
  var base = body.dataset.base || "";
  var me = null;
  var mePromise = null;
  var integer = new Intl.NumberFormat();

  function el(id) { return document.getElementById(id); }

  function text(node, value) {
    if (node && node.textContent !== value) node.textContent = value;
  }

  function make(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function ApiError(status, detail) {
    this.status = status;
    this.detail = detail;
    this.message = status + ": " + describe(detail);
  }

  function describe(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map(function (d) { return (d.loc || []).slice(1).join(".") + ": " + d.msg; }).join("; ");
    }
    return JSON.stringify(detail);
  }

  // JSON over fetch; writes carry the session's CSRF token. Rejects with ApiError.
  // options.withHeaders: resolve {data, headers} (e.g. a page's next cursor) instead of the data.
  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    var init = { method: options.method || "GET", headers: headers, credentials: "same-origin" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    var ready = init.method === "GET" ? Promise.resolve() : whoami();
    return ready.then(function () {
      if (init.method !== "GET" && me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
      return fetch(base + path, init);
    }).then(function (response) {
      if (response.status === 204) return null;
      return response.text().then(function (raw) {
        var data = null;
        try { data = raw ? JSON.parse(raw) : null; } catch (err) { data = raw; }
        if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
        return options.withHeaders ? { data: data, headers: response.headers } : data;
      });
    });
  }

  function whoami() {
    if (!mePromise) {
      mePromise = fetch(base + "/api/v1/me", { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { me = data; return data; })
        .catch(function () { return null; });
    }
    return mePromise;
  }

  var toastTimer = null;
  function toast(message, kind) {
    var node = el("toast");
    if (!node) return;
    node.className = "toast toast-" + (kind || "info");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { node.hidden = true; }, 6000);
  }

  function setConnection(kind, label) {
    var pill = el("connection");
    if (!pill) return;
    pill.className = "pill pill-" + kind;
    text(pill, label);
  }

  // One EventSource per page; handlers by event name ("state", "feed", "system").
  function live(channels, handlers) {
    var timer = null;
    function connect() {
      timer = null;
      var source = new EventSource(base + "/api/v1/live?channels=" + encodeURIComponent(channels.join(",")));
      channels.forEach(function (name) {
        source.addEventListener(name, function (event) {
          var data;
          try { data = JSON.parse(event.data); } catch (err) { setConnection("bad", "Unreadable update"); return; }
          handlers[name](data);
        });
      });
      source.addEventListener("open", function () {
        setConnection("live", "Live");
        if (handlers.open) handlers.open();
      });
      source.addEventListener("error", function () {
        setConnection("pending", "Reconnecting…");
        // The browser retries by itself unless the server answered with an error status.
        if (source.readyState === EventSource.CLOSED && !timer) timer = setTimeout(connect, 5000);
      });
    }
    connect();
  }

  function initial() {
    var node = el("initial-state");
    try { return node ? JSON.parse(node.textContent) : null; } catch (err) { return null; }
  }

  var LABELS = {
    accuracy: "Accuracy", log_loss: "Log loss", roc_auc: "ROC AUC", macro_f1: "Macro F1", mae: "MAE", rmse: "RMSE"
  };

  function metricLabel(name) {
    return LABELS[name] || String(name).replace(/_/g, " ").replace(/^./, function (c) { return c.toUpperCase(); });
  }

  function formatMetric(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    var size = Math.abs(value);
    return value.toFixed(size >= 100 ? 0 : size >= 10 ? 2 : 3);
  }

  function formatSeconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 120) return value.toFixed(1) + " s";
    return Math.round(value / 60) + " min";
  }

  function formatAge(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.floor(m / 60);
    return h < 48 ? h + " h ago" : Math.floor(h / 24) + " d ago";
  }

  function formatTime(iso) {
    var t = Date.parse(iso);
    return isFinite(t) ? new Date(t).toLocaleString() : "–";
  }

  function formatValue(value) {
    if (value === true) return "yes";
    if (value === false) return "no";
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") return Number.isInteger(value) ? integer.format(value) : formatMetric(value);
    return String(value);
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function signOut() {
    api("/api/v1/session", { method: "DELETE" })
      .catch(function () { /* signed out either way */ })
      .then(function () { window.location.assign(base + "/"); });
  }

  function start() {
    var button = el("sign-out");
    if (button) button.addEventListener("click", signOut);
    if (body.dataset.page === "signin") return;
    whoami().then(function (who) {
      if (!who) return;
      text(el("whoami"), who.name + " · " + who.role);
      body.classList.toggle("can-operate", !!who.can.operate);
      body.classList.toggle("can-administer", !!who.can.administer);
    });
  }

  window.Streamwise = {
    base: base, el: el, make: make, text: text, api: api, whoami: whoami, toast: toast, live: live,
    initial: initial, setConnection: setConnection, metricLabel: metricLabel, formatMetric: formatMetric,
    formatSeconds: formatSeconds, formatAge: formatAge, formatTime: formatTime, formatValue: formatValue,
    integer: integer, cssVar: cssVar, describe: describe
  };
  start();
})();
