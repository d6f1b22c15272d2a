// The live page: /api/models once, then a server-sent "model" event per changed model.
"use strict";

const charts = new Map(); // model id -> {drift: {plot, keys}, accuracy: {plot, keys}}
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const count = (value) => (value === null || value === undefined ? "–" : Number(value).toLocaleString("en"));
const when = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
const badge = (text) => el("span", {class: `badge ${text}`}, text);

function section(modelId) {
  let node = document.querySelector(`section.model[data-model="${CSS.escape(modelId)}"]`);
  if (!node) {
    document.getElementById("empty")?.remove();
    node = el("section", {class: "model", "data-model": modelId});
    const list = document.getElementById("models");
    const after = [...list.children].find((other) => other.dataset.model > modelId);
    list.insertBefore(node, after || null);
  }
  return node;
}

function alertRow(alert) {
  const evidence = el("details", {}, el("summary", {}, alert.summary || "evidence"),
                      el("pre", {}, JSON.stringify(alert.evidence, null, 2)));
  return el("tr", {"data-alert": alert.fingerprint, "data-state": alert.state},
            el("td", {}, badge(alert.state === "firing" ? alert.severity : "resolved")),
            el("td", {}, alert.kind), el("td", {}, alert.subject), el("td", {}, `v${alert.model_version}`),
            el("td", {}, when(alert.ts)), el("td", {}, evidence));
}

function table(head, rows, attrs = {}) {
  return el("table", attrs, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
            el("tbody", {}, ...rows));
}

function render(view) {
  const node = section(view.model_id);
  const s = view.status || {};
  const kpis = el("div", {class: "kpis"},
    ...[["version", s.model_version ? `v${s.model_version}` : "–"], ["events", count(s.events_processed)],
        ["dead letters", count(s.events_dead_lettered)], ["labels", count(s.labels_received)],
        ["accuracy (labels)", fmt(s.accuracy)], ["estimated accuracy", fmt(s.estimated_accuracy)],
        ["open alerts", view.open_alerts.length], ["retrain commands", count(s.retrain_commands)]]
      .map(([name, value]) => el("div", {"data-kpi": name}, el("span", {}, name), value)));
  const features = table(["feature", "state", "statistic", "latest"],
    Object.entries(view.features).map(([name, f]) =>
      el("tr", {"data-feature": name, "data-state": f.state}, el("td", {}, name), el("td", {}, badge(f.state)),
         el("td", {}, f.statistic || "–"), el("td", {}, fmt(f.value)))), {class: "features"});
  const versions = table(["version", "verdict", "rollout", "accuracy", "when", "reason"],
    view.versions.map((v) => el("tr", {"data-version": v.model_version},
      el("td", {}, `v${v.model_version}`), el("td", {}, badge(v.status)),
      el("td", {}, v.traffic_fraction === null ? (v.status === "promoted" ? "100 %" : "–")
                                               : `${Math.round(v.traffic_fraction * 100)} %`),
      el("td", {}, fmt(v.accuracy)), el("td", {}, when(v.ts)), el("td", {}, v.reason || ""))));
  let driftBox = node.querySelector(".drift-chart"), accuracyBox = node.querySelector(".accuracy-chart");
  if (!driftBox) {
    driftBox = el("div", {class: "chart drift-chart"});
    accuracyBox = el("div", {class: "chart accuracy-chart"});
  }
  const others = view.other_groups.length === 0 ? [] : [el("p", {class: "other-groups"},
    `also published by monitor group ${view.other_groups.join(", ")} (driftwarden ui --group NAME shows it)`)];
  node.replaceChildren(
    el("h2", {}, view.model_id, " ", el("small", {"data-group": view.group}, `monitor group ${view.group}`)),
    ...others, kpis,
    el("div", {class: "row"},
       el("div", {}, el("h3", {}, "Drift per feature (latest window statistic over time)"), driftBox),
       el("div", {}, el("h3", {}, "Features"), features)),
    el("div", {class: "row"},
       el("div", {}, el("h3", {}, "Accuracy: labels and estimated"), accuracyBox),
       el("div", {}, el("h3", {}, "Model versions: verdicts and rollouts"), versions)),
    el("h3", {}, `Open alerts (${view.open_alerts.length})`),
    table(["severity", "kind", "subject", "version", "fired", "evidence"], view.open_alerts.map(alertRow),
          {class: "open-alerts"}),
    el("h3", {}, `Resolved alerts (${view.resolved_alerts.length})`),
    table(["", "kind", "subject", "version", "resolved", "evidence"], view.resolved_alerts.map(alertRow),
          {class: "resolved-alerts"}));
  const names = Object.keys(view.drift);
  plot(view.model_id, "drift", driftBox, names, [view.ts, ...names.map((n) => view.drift[n])]);
  plot(view.model_id, "accuracy", accuracyBox, ["accuracy", "estimated accuracy"],
       [view.ts, view.accuracy, view.estimated_accuracy]);
}

function plot(modelId, which, box, names, data) {
  const known = charts.get(modelId) || {};
  charts.set(modelId, known);
  const current = known[which];
  if (data[0].length === 0) {  // no window tested yet (still collecting the reference)
    current?.plot.destroy();
    delete known[which];
    box.replaceChildren(el("p", {class: "waiting"}, "no window tested yet"));
    return;
  }
  const width = Math.max(box.parentElement.clientWidth - 10, 300);
  if (current && current.keys === names.join("\n") && box.contains(current.plot.root)) {
    current.plot.setData(data);
    return;
  }
  current?.plot.destroy();
  box.replaceChildren();
  const series = [{}, ...names.map((name, i) => ({label: name, stroke: COLORS[i % COLORS.length], width: 1.5,
                                                   spanGaps: true}))];
  // One point in time: a minute around it (uPlot would stretch the axis over years).
  const x = {time: true, range: (u, min, max) => (min === max ? [min - 30, max + 30] : [min, max])};
  known[which] = {keys: names.join("\n"), plot: new uPlot({width, height: 220, series, scales: {x}}, data, box)};
}

async function start() {
  const connection = document.getElementById("connection");
  const first = await (await fetch("/api/models")).json();
  first.models.forEach(render);
  const source = new EventSource("/events");
  source.addEventListener("open", () => { connection.dataset.state = "live"; connection.textContent = "live"; });
  source.addEventListener("error", () => { connection.dataset.state = "lost"; connection.textContent = "reconnecting"; });
  source.addEventListener("model", (event) => render(JSON.parse(event.data)));
}

start();
