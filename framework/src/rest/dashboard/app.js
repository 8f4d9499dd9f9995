// The Eichhorn dashboard: polls the REST server and renders the job into the page.
// No libraries, no network besides this server.
"use strict";

const REFRESH_MS = 1000;
const SPARK_POINTS = 60;
const NONE = -9223372036854775808; // i64::MIN: no watermark yet
const history = new Map(); // vertex id -> { last: {now, records}, rates: [] }
let currentJob = null;

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmtNum(n) { return Number(n).toLocaleString("en-US"); }
function fmtWatermark(w) {
  if (w === null || w === undefined || w <= NONE / 2) return "none";
  if (w >= 9.2e18) return "end (max)";
  return fmtNum(w);
}
function fmtMs(ms) { return ms === null || ms === undefined ? "" : fmtNum(ms) + " ms"; }

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function backPressureClass(ratio) {
  if (ratio > 0.5) return "bp-high";
  if (ratio > 0.1) return "bp-low";
  return "bp-ok";
}

// Per vertex: records/s and back-pressure ratio since the last refresh.
function updateRates(job) {
  const out = new Map();
  for (const v of job.vertices) {
    const h = history.get(v.id) || { last: null, rates: [], bpRatio: 0 };
    const records = v.metrics.records_in;
    if (h.last && job.now_ms > h.last.now) {
      const dt = job.now_ms - h.last.now;
      h.rates.push((records - h.last.records) * 1000 / dt);
      if (h.rates.length > SPARK_POINTS) h.rates.shift();
      h.bpRatio = (v.metrics.backpressured_ms - h.last.bp) / (dt * Math.max(1, v.parallelism));
    }
    h.last = { now: job.now_ms, records, bp: v.metrics.backpressured_ms };
    history.set(v.id, h);
    out.set(v.id, h);
  }
  return out;
}

function sparkline(rates) {
  const svg = el("svg:svg", { class: "sparkline", viewBox: "0 0 120 24", preserveAspectRatio: "none" });
  if (rates.length < 2) return svg;
  const max = Math.max(1, ...rates);
  const step = 120 / (SPARK_POINTS - 1);
  const offset = 120 - step * (rates.length - 1);
  const points = rates.map((r, i) => `${(offset + i * step).toFixed(1)},${(23 - (r / max) * 22).toFixed(1)}`);
  svg.append(el("svg:polyline", { points: points.join(" ") }));
  return svg;
}

// A layered layout: a vertex's column is its longest distance from a source.
function renderGraph(job, rates) {
  const svg = document.getElementById("job-graph");
  svg.replaceChildren();
  const depth = new Map(job.vertices.map(v => [v.id, 0]));
  for (let pass = 0; pass < job.vertices.length; pass++) {
    for (const e of job.edges) depth.set(e.target, Math.max(depth.get(e.target), depth.get(e.source) + 1));
  }
  const rows = new Map();
  const pos = new Map();
  const W = 210, H = 64, GX = 80, GY = 30;
  for (const v of job.vertices) {
    const d = depth.get(v.id);
    const row = rows.get(d) || 0;
    rows.set(d, row + 1);
    pos.set(v.id, { x: 10 + d * (W + GX), y: 10 + row * (H + GY) });
  }
  const defs = el("svg:defs", {});
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" });
  marker.append(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#667" }));
  defs.append(marker);
  svg.append(defs);
  job.edges.forEach((e, i) => {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    svg.append(el("svg:path", { class: "edge", id: "edge-" + i, d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}` }));
    svg.append(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2 - 22, y: (y1 + y2) / 2 - 4 }, e.partitioning));
  });
  for (const v of job.vertices) {
    const p = pos.get(v.id);
    const ratio = (rates.get(v.id) || {}).bpRatio || 0;
    const g = el("svg:g", { class: "vertex-node " + backPressureClass(ratio), id: "vertex-" + v.id, "data-vertex-id": v.id });
    const colour = { "bp-ok": "#cdeccf", "bp-low": "#ffe8a3", "bp-high": "#f5b3b3" }[backPressureClass(ratio)];
    g.append(el("svg:rect", { class: "vertex", x: p.x, y: p.y, width: W, height: H, fill: colour }));
    const title = v.operators.join(" \u2192 ");
    g.append(el("svg:title", {}, v.name));
    g.append(el("svg:text", { x: p.x + 8, y: p.y + 18, class: "vertex-name" }, title.length > 30 ? title.slice(0, 29) + "\u2026" : title));
    g.append(el("svg:text", { x: p.x + 8, y: p.y + 36 }, `parallelism ${v.parallelism}`));
    g.append(el("svg:text", { x: p.x + 8, y: p.y + 54 }, `in ${fmtNum(v.metrics.records_in)} / out ${fmtNum(v.metrics.records_out)}`));
    svg.append(g);
  }
  const width = Math.max(...[...pos.values()].map(p => p.x)) + W + 20;
  const height = Math.max(...[...pos.values()].map(p => p.y)) + H + 20;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  // Drawn at its natural size (12px text), shrunk only when the page is narrower.
  svg.style.width = width + "px";
  svg.style.height = height + "px";
}

function renderVertices(job, rates) {
  const body = document.querySelector("#vertex-table tbody");
  body.replaceChildren(...job.vertices.map(v => {
    const h = rates.get(v.id) || { rates: [], bpRatio: 0 };
    const rate = h.rates.length ? h.rates[h.rates.length - 1] : 0;
    const m = v.metrics;
    return el("tr", { class: "vertex-row", "data-vertex-id": v.id },
      el("td", { class: "vertex-name" }, v.name),
      el("td", { class: "num" }, v.parallelism),
      el("td", { class: "num records-in" }, fmtNum(m.records_in)),
      el("td", { class: "num records-out" }, fmtNum(m.records_out)),
      el("td", { class: "num" }, fmtNum(m.bytes_in)),
      el("td", { class: "num" }, fmtNum(m.bytes_out)),
      el("td", { class: "num" }, fmtNum(Math.round(rate))),
      el("td", {}, sparkline(h.rates)),
      el("td", { class: backPressureClass(h.bpRatio) }, (100 * h.bpRatio).toFixed(0) + "%"),
      el("td", { class: "num watermark" }, fmtWatermark(m.input_watermark)),
      el("td", { class: "num watermark" }, fmtWatermark(m.output_watermark)),
      el("td", { class: "num" }, fmtNum(m.late_records)),
      el("td", { class: "num" }, fmtNum(m.state_bytes)));
  }));
}

function renderCheckpoints(job) {
  const c = job.checkpoints;
  document.getElementById("checkpoint-summary").textContent =
    `completed ${c.completed}, failed ${c.failed}` +
    (c.latest_completed ? `, latest completed ${c.latest_completed.id}` : "") +
    (c.latest_failed ? `, latest failed ${c.latest_failed.id}: ${c.latest_failed.failure || ""}` : "");
  const body = document.querySelector("#checkpoint-table tbody");
  body.replaceChildren(...c.history.slice().reverse().map(k => el("tr", { class: "checkpoint-row " + k.status, "data-checkpoint-id": k.id },
    el("td", { class: "num" }, k.id),
    el("td", {}, k.kind),
    el("td", {}, k.status),
    el("td", { class: "num" }, fmtMs(k.trigger_ms - job.start_ms)),
    el("td", { class: "num" }, k.end_ms === null ? "" : fmtMs(k.end_ms - k.trigger_ms)),
    el("td", { class: "num" }, k.acknowledged),
    el("td", { class: "num" }, fmtNum(k.state_bytes)),
    el("td", {}, k.failure || ""))));
}

function renderExceptions(job) {
  const body = document.querySelector("#exception-table tbody");
  body.replaceChildren(...job.exceptions.slice().reverse().map(x => el("tr", { class: "exception-row" },
    el("td", { class: "num" }, fmtMs(x.time_ms - job.start_ms)),
    el("td", { class: "num" }, x.attempt),
    el("td", {}, x.task),
    el("td", {}, x.operator),
    el("td", {}, x.message))));
}

function renderTaskManagers(job) {
  const body = document.querySelector("#taskmanager-table tbody");
  body.replaceChildren(...job.task_managers.map(tm => {
    const subtasks = job.vertices.flatMap(v => v.subtasks.filter(s => s.task_manager === tm.id).map(s => `${v.name} (${s.index + 1}/${v.parallelism})`));
    return el("tr", { class: "taskmanager-row" },
      el("td", {}, tm.id), el("td", {}, tm.host),
      el("td", { class: "num" }, tm.slots), el("td", { class: "num" }, tm.slots_used),
      el("td", {}, subtasks.join(", ")));
  }));
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const overview = await getJson("/jobs");
    const select = document.getElementById("job-select");
    const wanted = location.hash.slice(1) || currentJob || (overview.jobs.length ? overview.jobs[overview.jobs.length - 1].id : null);
    select.replaceChildren(...overview.jobs.map(j => el("option", { value: j.id }, `${j.name} (${j.state})`)));
    if (!wanted) { document.getElementById("job-summary").textContent = "no jobs"; return; }
    if (wanted !== currentJob) history.clear();
    currentJob = wanted;
    select.value = wanted;
    const job = await getJson("/jobs/" + encodeURIComponent(wanted));
    const rates = updateRates(job);
    const state = document.getElementById("job-state");
    state.textContent = job.state;
    state.className = "state " + job.state;
    document.getElementById("job-summary").textContent =
      `${job.name} \u00b7 ${job.id} \u00b7 attempt ${job.attempt} \u00b7 restarts ${job.restarts}` + (job.failure ? " \u00b7 " + job.failure : "");
    renderGraph(job, rates);
    renderVertices(job, rates);
    renderCheckpoints(job);
    renderExceptions(job);
    renderTaskManagers(job);
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
    error.textContent = "";
  } catch (e) {
    error.textContent = "cannot reach the job: " + e.message;
  }
}

document.getElementById("job-select").addEventListener("change", e => { location.hash = e.target.value; refresh(); });
refresh();
setInterval(refresh, REFRESH_MS);
