// measure serve: the live page. Every model or user text is written with textContent (or as an
// SVG text node), never parsed as HTML; the server sends JSON only.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["done", "cancelled", "error"]);
const EVENT_LETTERS = {detection_latency: "D", adaptation_latency: "A", adaptation_latency_kl: "K"};

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) throw new Error(data && data.error ? data.error : `${response.status}`);
  return data;
}

const fmt = (x) => (x === null || x === undefined ? "n/a" : Math.abs(x) >= 100 || x === 0 ? x.toFixed(0)
  : Number(x.toPrecision(3)).toString());

// ---------------------------------------------------------------------------------- set-up
let info = null;
let pairs = [];
let picked = null;

async function init() {
  info = await api("/api/info");
  $("model").textContent = `${info.model} on ${info.device}`;
  $("max_new_tokens").max = info.limits.max_new_tokens;
  $("max_new_tokens").value = info.defaults.max_new_tokens;
  $("points").value = info.defaults.points;
  $("question_a").maxLength = $("question_b").maxLength = info.limits.question_chars;
  $("context").maxLength = info.limits.context_chars;
  $("update").maxLength = info.limits.update_chars;
  for (const form of info.update_forms) $("update_form").append(el("option", {value: form}, form));
  for (const name of info.conditions) {
    const reference = name === "ignore" || name === "oracle";
    const box = el("input", {type: "checkbox", value: name, id: `cond-${name}`});
    box.checked = info.default_conditions.includes(name);
    if (reference) { box.disabled = true; box.title = "a reference run: always run"; }
    const label = el("label", {class: "check"});
    label.append(box, document.createTextNode(` ${name}`));
    $("conditions").append(label);
  }
  const datasets = await api("/api/datasets");
  for (const entry of datasets) {
    const option = el("option", {value: entry.name}, entry.available ? entry.name : `${entry.name} (unavailable)`);
    option.disabled = !entry.available;
    option.title = entry.note;
    $("dataset").append(option);
  }
  $("dataset").value = info.defaults.dataset;
  await loadPairs();
  await loadFolders();
}

async function loadPairs() {
  const select = $("pair");
  while (select.options.length > 1) select.remove(1);
  picked = null;
  try {
    pairs = (await api(`/api/pairs?dataset=${encodeURIComponent($("dataset").value)}`)).pairs;
  } catch (error) { showError(error.message); pairs = []; }
  for (const pair of pairs) {
    const kind = pair.variation_type === null ? "identical" : pair.variation_type;
    const text = `${pair.id} (${kind}): ${pair.question_a}`;
    select.append(el("option", {value: pair.id}, text.length > 110 ? `${text.slice(0, 110)}…` : text));
  }
}

function pickPair() {
  picked = pairs.find((pair) => pair.id === $("pair").value) || null;
  if (!picked) return;
  $("kind").value = picked.kind;
  $("context").value = picked.context || "";
  $("question_a").value = picked.question_a;
  $("question_b").value = picked.question_b;
  $("update").value = picked.erratum;
}

async function loadFolders() {
  let folders = [];
  try { folders = await api("/api/runs"); } catch (error) { showError(error.message); }
  const watch = $("folder");
  const calibration = $("calibration");
  const keepWatch = watch.value;
  const keepCalibration = calibration.value;
  while (watch.options.length) watch.remove(0);
  while (calibration.options.length > 1) calibration.remove(1);
  for (const folder of folders) {
    const state = folder.finished ? "finished" : folder.samples_bytes ? "being written or interrupted" : "no records yet";
    const errors = folder.errors || [];
    const option = el("option", {value: folder.id}, `${folder.id} (${state}${errors.length ? "; a file is unreadable" : ""})`);
    if (errors.length) option.title = errors.join("\n");
    watch.append(option);
    if (folder.has_metrics) {
      const other = folder.model && info && folder.model !== info.model ? `, model ${folder.model}` : "";
      calibration.append(el("option", {value: folder.id}, `${folder.id}${other}`));
    }
  }
  if (keepWatch) watch.value = keepWatch;
  calibration.value = keepCalibration;
}

function showError(message) { $("form-error").textContent = message || ""; }

// ---------------------------------------------------------------------------------- lanes
const lanes = new Map();
let current = null; // {id, source, pressed, firstToken, settings}

function sparkline(className, label) {
  const box = el("div", {class: `spark ${className}`});
  const svg = svgEl("svg", {viewBox: "0 0 300 40", preserveAspectRatio: "none", role: "img"});
  svg.setAttribute("aria-label", label);
  const title = el("span", {class: "spark-label"}, label);
  box.append(title, svg);
  return {box, svg, title, label};
}

function makeLane(spec, maxTokens) {
  const node = el("div", {class: "lane", "data-lane": spec.lane});
  const head = el("h3", {}, spec.point === "-" ? spec.condition : `${spec.condition} @ ${spec.point}`);
  const state = el("span", {class: "lane-state"}, "waiting");
  head.append(state);
  const tokens = el("div", {class: "tokens"});
  const kl = sparkline("kl", "KL(run || P_matched)");
  const r = sparkline("r", "r(t)");
  const marks = el("div", {class: "marks"});
  node.append(head, tokens, kl.box, r.box, marks);
  $("lanes").append(node);
  const lane = {spec, node, state, tokens, kl, r, marks, maxTokens, t0: null, pieces: [], spans: [],
                klValues: [], rValues: [], marksByEvent: {}, update: null, pending: false};
  lanes.set(spec.lane, lane);
  return lane;
}

function startForkedLane(lane, t0) {
  lane.t0 = t0;
  const ignore = lanes.get("ignore@-");
  for (let i = 0; i < t0; i += 1) {
    const piece = ignore && ignore.pieces[i] !== undefined ? ignore.pieces[i] : "";
    addToken(lane, i, piece, null, null, "shared");
  }
  lane.update = el("span", {class: "update-mark", title: "the update is injected here"}, "update");
  lane.tokens.append(lane.update);
}

function addToken(lane, i, piece, r, kl, extraClass) {
  const span = el("span", {class: `tok${extraClass ? ` ${extraClass}` : ""}`}, piece);
  lane.tokens.append(span);
  lane.pieces[i] = piece;
  lane.spans[i] = span;
  if (r !== null && r !== undefined) lane.rValues[i] = r;
  if (kl !== null && kl !== undefined) lane.klValues[i] = kl;
}

function scheduleDraw(lane) {
  if (lane.pending) return;
  lane.pending = true;
  requestAnimationFrame(() => { lane.pending = false; draw(lane); });
}

function drawCurve(spark, values, lane) {
  const svg = spark.svg;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const n = Math.max(lane.maxTokens, values.length, 2);
  const known = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const x = (i) => (300 * (i + 0.5)) / n;
  if (lane.t0 !== null) svg.append(svgEl("line", {x1: x(lane.t0 - 0.5), x2: x(lane.t0 - 0.5), y1: 0, y2: 40, class: "t0"}));
  for (const mark of Object.values(lane.marksByEvent)) {
    if (mark.censored) continue;
    svg.append(svgEl("line", {x1: x(mark.index), x2: x(mark.index), y1: 0, y2: 40, class: "event"}));
  }
  if (!known.length) { spark.title.textContent = `${spark.label}: no values yet`; return; }
  let low = Math.min(0, ...known);
  let high = Math.max(0, ...known);
  if (high - low < 1e-9) high = low + 1;
  const y = (v) => 38 - (36 * (v - low)) / (high - low);
  svg.append(svgEl("line", {x1: 0, x2: 300, y1: y(0), y2: y(0), class: "zero"}));
  let path = "";
  let pen = false;
  for (let i = 0; i < values.length; i += 1) {
    const v = values[i];
    if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; continue; }
    path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  }
  svg.append(svgEl("path", {d: path, class: "curve"}));
  spark.title.textContent = `${spark.label}: ${fmt(low)} to ${fmt(high)}`;
}

function draw(lane) {
  drawCurve(lane.kl, lane.klValues, lane);
  drawCurve(lane.r, lane.rValues, lane);
}

function onToken(message) {
  const lane = lanes.get(message.lane);
  if (!lane) return;
  if (current && current.firstToken === null) {
    current.firstToken = performance.now() - current.pressed;
    document.body.dataset.firstTokenMs = String(Math.round(current.firstToken));
    setStatus(`running: first token ${(current.firstToken / 1000).toFixed(2)} s after pressing run`);
  }
  if (lane.t0 === null && lane.spec.point !== "-") startForkedLane(lane, message.i);
  if (lane.t0 === null) lane.t0 = 0;
  addToken(lane, message.i, message.piece, message.r, message.kl, "");
  lane.spans[message.i].title = `token ${message.i}`;
  lane.state.textContent = "decoding";
  lane.node.dataset.tokens = String(lane.spans.filter((s, i) => s && i >= lane.t0).length);
  scheduleDraw(lane);
}

function onRun(message) {
  const lane = lanes.get(message.lane);
  if (!lane) return;
  if (lane.t0 === null && lane.spec.point !== "-") startForkedLane(lane, message.t0);
  if (lane.t0 === null) lane.t0 = 0;
  // Tokens that never streamed (none should) are added from the run itself.
  for (let i = lane.t0; i < message.pieces.length; i += 1) {
    if (!lane.spans[i]) addToken(lane, i, message.pieces[i], null, null, "");
  }
  // Values missing from the token events are filled from the scored run.
  message.kl.forEach((v, i) => { if (lane.klValues[i] === undefined || lane.klValues[i] === null) lane.klValues[i] = v; });
  message.r.forEach((v, i) => { if (lane.rValues[i] === undefined || lane.rValues[i] === null) lane.rValues[i] = v; });
  message.attribution.forEach((label, k) => {
    const span = lane.spans[lane.t0 + k];
    if (span) span.classList.add(`attr-${label}`);
  });
  lane.spans.forEach((span, i) => {
    if (span) span.title = `token ${i}: r ${fmt(lane.rValues[i])}, KL matched ${fmt(lane.klValues[i])} nats`;
  });
  if (lane.update) {
    const inserted = message.inserted ? message.inserted.trim() : "";
    lane.update.title = inserted ? `injected: ${inserted}` : "prompt replaced by B (nothing inserted)";
    lane.update.textContent = message.condition === "flush" || message.condition === "partial" ? "A → B" : "update";
  }
  const gap = message.gap === null ? "" : `, gap ${fmt(message.gap)} nats`;
  lane.state.textContent = `${message.stop_reason === "eos" ? "ended" : "at the limit"}${gap}`;
  lane.node.classList.add("complete");
  scheduleDraw(lane);
}

function onMark(message) {
  const lane = lanes.get(message.lane);
  if (!lane) return;
  lane.marksByEvent[message.event] = message;
  while (lane.marks.firstChild) lane.marks.removeChild(lane.marks.firstChild);
  for (const mark of Object.values(lane.marksByEvent)) {
    const letter = EVENT_LETTERS[mark.event] || "?";
    const text = mark.censored ? `${letter}: not reached in ${mark.k} tokens` : `${letter}: token ${mark.k} after the update`;
    lane.marks.append(el("span", {class: `mark${mark.censored ? " censored" : ""}`, title: mark.event}, text));
    const span = lane.spans[mark.index];
    if (!mark.censored && span) span.classList.add("event-token");
  }
  scheduleDraw(lane);
}

function showStarted(message) {
  const summary = $("summary");
  while (summary.firstChild) summary.removeChild(summary.firstChild);
  const p = el("p");
  p.append(el("strong", {}, "Update: "), el("q", {}, message.update), document.createTextNode(` (${message.update_source})`));
  summary.append(p);
  const cal = message.calibration;
  let note;
  if (!cal.calibrated) {
    note = el("p", {class: "uncalibrated"}, cal.note);
  } else {
    const parts = Object.entries(cal.points).map(([point, entry]) => (entry.note ? `${point}: ${entry.note}`
      : `${point}: ${entry.events.map((e) => e.rules.map((r) => `${EVENT_LETTERS[e.event]} w${r.window} > ${fmt(r.threshold)}`).join(" and ")).join("; ")}`));
    note = el("p", {class: "calibrated"}, `Marks from ${cal.source} (alpha ${cal.alpha}): every fold's rule must fire. ${parts.join(" | ")}${cal.note ? `. ${cal.note}` : ""}`);
  }
  summary.append(note);
  while ($("lanes").firstChild) $("lanes").removeChild($("lanes").firstChild);
  lanes.clear();
  for (const spec of message.lanes) makeLane(spec, message.settings.max_new_tokens);
}

function setStatus(text) { $("status").textContent = text; }

function finish(text) {
  setStatus(text);
  $("run").disabled = false;
  $("cancel").disabled = true;
  if (current && current.source) current.source.close();
  document.body.dataset.state = "idle";
}

function onMessage(message) {
  switch (message.type) {
    case "queued":
      setStatus(message.position ? `queued: ${message.position} ahead` : "starting");
      break;
    case "running": setStatus("running: loading the prompts"); break;
    case "started": showStarted(message); break;
    case "token": onToken(message); break;
    case "run": onRun(message); break;
    case "mark": onMark(message); break;
    case "done": {
      const skipped = message.skipped.length ? `; skipped ${message.skipped.map((s) => `${s.point} (${s.reason})`).join(", ")}` : "";
      const first = current && current.firstToken !== null ? `, first token ${(current.firstToken / 1000).toFixed(2)} s after pressing run` : "";
      finish(`done in ${message.seconds.toFixed(1)} s${first}${skipped}`);
      break;
    }
    case "cancelled": finish(`cancelled: ${message.reason}`); break;
    case "error": finish(`failed: ${message.message}`); break;
    default: break;
  }
}

function requestBody() {
  const conditions = [...document.querySelectorAll("#conditions input")].filter((box) => box.checked).map((box) => box.value);
  const body = {
    kind: $("kind").value, context: $("context").value, question_a: $("question_a").value,
    question_b: $("question_b").value, update: $("update").value, update_form: $("update_form").value,
    points: $("points").value, max_new_tokens: Number($("max_new_tokens").value), conditions,
    calibration: $("calibration").value || null,
  };
  if (picked) { body.dataset = $("dataset").value; body.pair_id = picked.id; }
  return body;
}

async function run(event) {
  event.preventDefault();
  showError("");
  if (current && current.source) current.source.close();
  const pressed = performance.now();
  $("run").disabled = true;
  document.body.dataset.state = "running";
  delete document.body.dataset.firstTokenMs;
  let submitted;
  try {
    submitted = await api("/api/experiments", requestBody());
  } catch (error) {
    showError(error.message);
    finish("not started");
    return;
  }
  current = {id: submitted.id, pressed, firstToken: null, source: new EventSource(submitted.events)};
  document.body.dataset.experiment = submitted.id;
  $("cancel").disabled = false;
  setStatus(submitted.position ? `queued: ${submitted.position} ahead` : "starting");
  current.source.onmessage = (e) => {
    const message = JSON.parse(e.data);
    onMessage(message);
    if (TERMINAL.has(message.type) && current) current.source.close();
  };
  current.source.onerror = () => { if (document.body.dataset.state === "running") setStatus("connection lost; retrying"); };
}

async function cancel() {
  if (!current) return;
  try { await api(`/api/experiments/${encodeURIComponent(current.id)}/cancel`, {}); } catch (error) { showError(error.message); }
}

async function generate() {
  showError("");
  try {
    const question_b = $("question_b").value.trim() ? $("question_b").value : $("question_a").value;
    const data = await api("/api/update", {question_a: $("question_a").value, question_b, kind: $("kind").value,
                                            update_form: $("update_form").value});
    $("update").value = data.update;
  } catch (error) { showError(error.message); }
}

// ---------------------------------------------------------------------------------- watch a run
let watchSource = null;

function clearRecords() {
  const body = document.querySelector("#records tbody");
  while (body.firstChild) body.removeChild(body.firstChild);
  $("records-count").textContent = "";
}

function addRecords(items, total) {
  const body = document.querySelector("#records tbody");
  for (const item of items) {
    const row = el("tr");
    for (const value of [item.problem_id, item.condition, item.point, item.variation_type ?? "identical",
      item.stop_reason, fmt(item.adaptation_gap), item.outcome ?? "", item.continuation]) {
      row.append(el("td", {}, value));
    }
    body.append(row);
  }
  while (body.rows.length > 2000) body.deleteRow(0);
  $("records-count").textContent = `${total} read`;
}

function showFindings(message) {
  const box = $("findings-body");
  while (box.firstChild) box.removeChild(box.firstChild);
  const findings = message.findings || {};
  for (const point of findings.points || []) {
    const list = el("ul", {class: "findings"});
    for (const sentence of point.sentences) list.append(el("li", {}, sentence.text));
    if (point.power) list.append(el("li", {class: "power"}, point.power.text));
    box.append(list);
  }
  for (const sentence of findings.calibration || []) box.append(el("p", {class: "calibration"}, sentence.text));
  if ((findings.cannot_say || []).length) {
    box.append(el("h3", {}, "What this run cannot say"));
    const list = el("ul", {class: "cannot"});
    for (const item of findings.cannot_say) list.append(el("li", {"data-code": item.code}, item.text));
    box.append(list);
  }
  if (!box.firstChild) box.append(el("p", {class: "hint"}, "No findings yet: no injection point has changed problems."));
  const source = message.source === "metrics.json" ? " (as the run wrote them in metrics.json)" : "";
  $("findings-note").textContent = `from ${message.records} records${source}`;
}

function openFolder() {
  const id = $("folder").value;
  if (!id) return;
  if (watchSource) watchSource.close();
  clearRecords();
  $("watch-status").textContent = "opening";
  watchSource = new EventSource(`/api/runs/events?id=${encodeURIComponent(id)}`);
  watchSource.onmessage = (e) => {
    const message = JSON.parse(e.data);
    if (message.type === "records") addRecords(message.items, message.total);
    else if (message.type === "reset") clearRecords();
    else if (message.type === "findings") showFindings(message);
    else if (message.type === "findings_error") $("findings-note").textContent = `could not compute: ${message.message}`;
    else if (message.type === "status") {
      const pending = message.pending_bytes ? `, a record being written (${message.pending_bytes} bytes so far)` : "";
      const warn = message.warnings.length ? `; ${message.warnings[message.warnings.length - 1]}` : "";
      $("watch-status").textContent = `${message.records} records, ${message.finished ? "run finished" : "watching for more"}${pending}${warn}`;
    }
  };
  watchSource.onerror = () => { $("watch-status").textContent = "connection lost; retrying"; };
}

function showTab(name) {
  $("live").hidden = name !== "live";
  $("watch").hidden = name !== "watch";
  $("tab-live").classList.toggle("active", name === "live");
  $("tab-watch").classList.toggle("active", name === "watch");
  if (name === "watch") loadFolders();
}

$("experiment").addEventListener("submit", run);
$("cancel").addEventListener("click", cancel);
$("generate").addEventListener("click", generate);
$("dataset").addEventListener("change", loadPairs);
$("pair").addEventListener("change", pickPair);
$("open-folder").addEventListener("click", openFolder);
$("refresh-folders").addEventListener("click", loadFolders);
$("tab-live").addEventListener("click", () => showTab("live"));
$("tab-watch").addEventListener("click", () => showTab("watch"));
init().then(() => { document.body.dataset.ready = "1"; }, (error) => showError(`could not start: ${error.message}`));
