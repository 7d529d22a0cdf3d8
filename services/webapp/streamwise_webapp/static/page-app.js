// Application page: the champion now, the live feed with one-click feedback, and a prediction form.
(function () {
  "use strict";
  var S = window.Streamwise;
  var el = S.el, make = S.make;
  var current = null;
  var clockOffsetMs = 0;
  var info = null;
  var paused = false;
  var canOperate = false;
  var items = new Map(); // event id -> <li>
  var MAX_ITEMS = 50;

  // ---- the champion ------------------------------------------------------------

  function renderAge() {
    if (!current) return;
    S.text(el("age"), "(" + S.formatAge(Date.now() + clockOffsetMs - Date.parse(current.published_at)) + ")");
  }

  function onState(state) {
    var serverTime = Date.parse(state.server_time);
    if (isFinite(serverTime)) clockOffsetMs = serverTime - Date.now();
    if (state.status === "unavailable") S.setConnection("bad", "Model store unavailable");
    var model = state.current;
    if (!model) { S.text(el("version"), "none yet"); return; }
    var changed = current && current.version !== model.version;
    current = model;
    S.text(el("version"), "v" + model.version);
    S.text(el("metric-name"), S.metricLabel(model.primary_metric));
    S.text(el("metric-value"), S.formatMetric(model.primary_value));
    S.text(el("metric-recent"), "last " + S.integer.format(model.recent_window) + ": " + S.formatMetric(model.recent_value));
    S.text(el("examples"), S.integer.format(model.examples_seen));
    var published = el("published");
    published.dateTime = model.published_at;
    S.text(published, new Date(model.published_at).toLocaleTimeString());
    renderAge();
    if (changed) {
      var card = document.querySelector(".stat-version");
      card.classList.remove("flash");
      void card.offsetWidth; // restart the animation
      card.classList.add("flash");
    }
  }

  // ---- the feed ----------------------------------------------------------------

  // Binary labels read as the label's name ("is_fraud" → "fraud" / "not fraud").
  function labelText(value) {
    var name = info ? info.label_name.replace(/^is_/, "").replace(/_/g, " ") : "yes";
    if (value === true) return name;
    if (value === false) return "not " + name;
    return S.formatValue(value);
  }

  function choices() {
    if (!info) return [];
    if (info.classes) return info.classes;
    return null; // regression: a number field
  }

  function sendFeedback(item, label, row) {
    var buttons = row.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    S.api("/api/v1/feedback", { method: "POST", body: { id: item.id, label: label, prediction: item.prediction } })
      .then(function () {
        item.feedback = { label: label, by: "you", at: new Date().toISOString() };
        renderItem(item);
        S.toast("Label sent for " + item.id + ": the trainer learns it next.", "ok");
      })
      .catch(function (err) {
        buttons.forEach(function (b) { b.disabled = false; });
        S.toast("Feedback not sent: " + (err.message || err), "bad");
      });
  }

  function outcome(item) {
    var known = item.feedback ? item.feedback.label : item.label;
    if (known === null || known === undefined) return null;
    return { label: known, right: item.prediction !== null && item.prediction === known, by: item.feedback ? item.feedback.by : "the event" };
  }

  function renderItem(item) {
    var id = "ev-" + item.id.replace(/[^A-Za-z0-9_-]/g, "_");
    var features = Object.keys(item.features).map(function (k) {
      return make("span", { className: "feature" }, [make("span", { className: "feature-name", text: k }), " " + S.formatValue(item.features[k])]);
    });
    var prediction;
    if (item.problem) {
      prediction = make("p", { className: "prediction muted", text: item.problem });
    } else {
      var conf = typeof item.confidence === "number" ? Math.round(item.confidence * 100) + " %" : "–";
      prediction = make("p", { className: "prediction" }, [
        make("span", { className: "badge badge-" + (item.prediction === true ? "alert" : "calm"), text: labelText(item.prediction) }),
        make("span", { className: "confidence", text: conf + " sure" }),
        make("meter", { min: "0", max: "1", value: String(item.confidence || 0), "aria-label": "confidence " + conf })
      ]);
    }
    var known = outcome(item);
    var actions;
    if (known) {
      actions = make("p", { className: "outcome " + (known.right ? "ok" : "bad"),
        text: (known.right ? "✓ right" : "✗ wrong") + ": was " + labelText(known.label) + " (" + known.by + ")" });
    } else if (canOperate && !item.problem) {
      var options = choices();
      var buttons = [];
      if (options) {
        buttons.push(make("button", { type: "button", className: "button-ok", "data-action": "confirm",
          "aria-label": "Confirm " + labelText(item.prediction) + " for " + item.id, text: "✓ Right",
          onclick: function (e) { sendFeedback(item, item.prediction, e.currentTarget.closest("li")); } }));
        options.filter(function (c) { return c !== item.prediction; }).forEach(function (c) {
          buttons.push(make("button", { type: "button", className: "button-bad", "data-action": "correct",
            "aria-label": "Correct " + item.id + " to " + labelText(c), text: "✗ It was " + labelText(c),
            onclick: function (e) { sendFeedback(item, c, e.currentTarget.closest("li")); } }));
        });
      }
      actions = make("div", { className: "actions" }, buttons);
    } else {
      actions = make("p", { className: "muted", text: item.problem ? "" : "awaiting its outcome" });
    }
    var row = make("li", { id: id, className: "feed-item", "data-event-id": item.id }, [
      make("div", { className: "feed-head" }, [
        make("code", { text: item.id }),
        make("time", { dateTime: item.accepted_at, text: new Date(item.accepted_at).toLocaleTimeString() }),
        item.version ? make("span", { className: "muted", text: "v" + item.version }) : null
      ]),
      prediction,
      make("div", { className: "features" }, features),
      actions
    ]);
    var old = items.get(item.id);
    if (old) { old.replaceWith(row); } else {
      el("feed").prepend(row);
      while (el("feed").children.length > MAX_ITEMS) {
        var last = el("feed").lastElementChild;
        items.delete(last.dataset.eventId);
        last.remove();
      }
    }
    items.set(item.id, row);
    el("feed-empty").hidden = true;
  }

  function onFeed(item) {
    if (paused && !items.has(item.id)) return;
    renderItem(item);
  }

  // ---- the form ----------------------------------------------------------------

  function buildForm() {
    var form = el("predict-form");
    info.features.forEach(function (f) {
      var id = "f-" + f.name;
      var input;
      if (f.values) {
        input = make("select", { id: id, name: f.name }, f.values.map(function (v) { return make("option", { value: v, text: v }); }));
      } else if (f.type === "bool") {
        input = make("select", { id: id, name: f.name }, [make("option", { value: "false", text: "no" }), make("option", { value: "true", text: "yes" })]);
      } else {
        input = make("input", { id: id, name: f.name, type: "number", step: f.type === "int" ? "1" : "any", required: f.required, inputmode: "decimal" });
      }
      form.appendChild(make("label", { for: id, text: f.name.replace(/_/g, " ") }));
      form.appendChild(input);
    });
    form.appendChild(make("button", { type: "submit", className: "button-primary", text: "Predict" }));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var features = {};
      info.features.forEach(function (f) {
        var raw = form.elements[f.name].value;
        if (raw === "") return;
        features[f.name] = f.type === "bool" ? raw === "true" : (f.type === "float" || f.type === "int") ? Number(raw) : raw;
      });
      var out = el("predict-result");
      S.api("/api/v1/predict", { method: "POST", body: { features: features } })
        .then(function (r) {
          var conf = typeof r.confidence === "number" ? Math.round(r.confidence * 100) + " %" : "–";
          out.replaceChildren(
            make("p", { className: "big" }, [make("span", { className: "badge badge-" + (r.prediction === true ? "alert" : "calm"), text: labelText(r.prediction) }), " " + conf + " sure"]),
            make("p", { className: "muted", text: r.model + " v" + r.version + " · id " + r.id })
          );
          out.hidden = false;
        })
        .catch(function (err) {
          out.replaceChildren(make("p", { className: "error", text: "No prediction: " + S.describe(err.detail || err.message) }));
          out.hidden = false;
        });
    });
  }

  // ---- start -------------------------------------------------------------------

  el("feed-pause").addEventListener("click", function (e) {
    paused = !paused;
    e.currentTarget.setAttribute("aria-pressed", String(paused));
    e.currentTarget.textContent = paused ? "Resume" : "Pause";
  });

  var initial = S.initial();
  if (initial && initial.state) onState(initial.state);
  Promise.all([S.whoami(), S.api("/api/v1/app")]).then(function (results) {
    canOperate = !!(results[0] && results[0].can.operate);
    info = results[1];
    if (!canOperate) S.text(el("feedback-hint"), "Operators can confirm or correct predictions.");
    buildForm();
    return S.api("/api/v1/feed?limit=20");
  }).then(function (feed) {
    feed.slice().reverse().forEach(renderItem);
    S.live(["state", "feed"], { state: onState, feed: onFeed });
  }).catch(function (err) { S.toast("Could not load the page: " + (err.message || err), "bad"); });
  setInterval(renderAge, 1000);
})();
