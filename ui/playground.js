// dlserve playground: one panel per model kind, plain JS, no build step.
// Every request URL is relative to the page ("classify", "ui/series.json"), so the page works behind
// a reverse proxy at a path prefix; the curl commands use the same base, resolved from the page URL.
"use strict";

/** The server's base URL (origin + path prefix), e.g. "http://host/dlserve/". */
const BASE = new URL(".", location.href).href;

const $ = (id) => document.getElementById(id);
const state = { models: [] };

// ---------------------------------------------------------------------------------------------
// Helpers: requests, errors, timing, curl

/** Quotes a string for a POSIX shell. */
function sh(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

/** A curl command line, wrapped for reading. */
function curl(parts) {
  return parts.filter(Boolean).join(" \\\n  ");
}

/** Parses `Server-Timing: queue;dur=1.0, compute;dur=2.0, batch;desc="3"` into {queue, compute, batch}. */
function serverTiming(header) {
  const out = {};
  if (!header) return out;
  for (const entry of header.split(",")) {
    const [name, ...params] = entry.trim().split(";");
    const rec = {};
    for (const p of params) {
      const [k, v] = p.trim().split("=");
      rec[k] = v === undefined ? true : v.replace(/^"|"$/g, "");
    }
    out[name.trim()] = rec;
  }
  return out;
}

/** Shows who served a response and how long it took. */
function showMeta(prefix, resp, roundTripMs, extra) {
  const t = serverTiming(resp.headers.get("server-timing"));
  const parts = [];
  const name = resp.headers.get("x-model-name");
  const version = resp.headers.get("x-model-version");
  if (name) parts.push(`Served by ${name} v${version ?? "?"}`);
  if (t.queue && t.queue.dur !== undefined) parts.push(`queue ${Number(t.queue.dur).toFixed(2)} ms`);
  if (t.compute && t.compute.dur !== undefined) parts.push(`compute ${Number(t.compute.dur).toFixed(2)} ms`);
  if (t.batch && t.batch.desc !== undefined) parts.push(`batch of ${t.batch.desc}`);
  parts.push(`HTTP ${resp.status}`);
  if (roundTripMs !== undefined) parts.push(`${roundTripMs.toFixed(0)} ms round trip`);
  if (extra) parts.push(extra);
  const el = $(prefix + "-meta");
  el.textContent = parts.join(" · ");
  el.dataset.model = name || "";
  el.dataset.version = version || "";
}

/** An error from the server (`{"error": {type, message, field}}`) or from the page itself. */
class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    const msg = typeof e === "string" ? e : e.message || `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.type = e.type;
    this.field = e.field;
  }
}

function showError(prefix, err) {
  const el = $(prefix + "-error");
  if (!err) {
    el.textContent = "";
    return;
  }
  let text;
  if (err instanceof ApiError) {
    text = `Error${err.status ? " " + err.status : ""}${err.type ? " (" + err.type + ")" : ""}: ${err.message}`;
    if (err.field) text += ` [field: ${err.field}]`;
  } else if (err.name === "AbortError") {
    text = "Stopped.";
  } else {
    text = `Error: ${err.message || err}`;
  }
  el.textContent = text;
}

/** fetch() that turns a non-2xx answer into an ApiError and measures the round trip. */
async function request(url, init) {
  const t0 = performance.now();
  const resp = await fetch(url, init);
  const ms = performance.now() - t0;
  if (!resp.ok) {
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    throw new ApiError(resp.status, body);
  }
  return { resp, ms };
}

/** Runs a panel action: clears its error, shows a failure in its alert region. */
async function run(prefix, fn) {
  showError(prefix, null);
  const section = $(prefix + "-error").closest("section");
  section.setAttribute("aria-busy", "true");
  try {
    await fn();
  } catch (err) {
    showError(prefix, err);
  } finally {
    section.removeAttribute("aria-busy");
  }
}

/** A query string from an object, skipping empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/** Numbers from free text ("1, 2 3;4"); throws naming the first that is not one. */
function parseNumbers(text, what) {
  const tokens = text.split(/[\s,;]+/).filter(Boolean);
  return tokens.map((t, i) => {
    const n = Number(t);
    if (!Number.isFinite(n)) throw new ApiError(0, { error: { type: "invalid_input", message: `${what}: item ${i + 1} ("${t}") is not a number` } });
    return n;
  });
}

function fmt(x, digits = 3) {
  if (typeof x !== "number") return String(x);
  if (x !== 0 && (Math.abs(x) < 0.001 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toFixed(digits)).toString();
}

/** Renders horizontal bars: items [{name, value (0..1), text}] */
function renderBars(list, items) {
  list.replaceChildren();
  for (const it of items) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = it.name;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${Math.max(0, Math.min(1, it.value)) * 100}%`;
    track.appendChild(fill);
    const val = document.createElement("span");
    val.className = "val";
    val.textContent = it.text;
    li.append(name, track, val);
    li.dataset.name = it.name;
    li.dataset.value = String(it.value);
    list.appendChild(li);
  }
}

/** Object URLs that a panel replaces are revoked so they do not pile up. */
const objectUrls = {};
function objectUrl(key, blob) {
  if (objectUrls[key]) URL.revokeObjectURL(objectUrls[key]);
  objectUrls[key] = URL.createObjectURL(blob);
  return objectUrls[key];
}

async function sha256Hex(blob) {
  if (!(window.crypto && crypto.subtle)) return "";
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchSample(path) {
  const { resp } = await request(path);
  return resp.blob();
}

function imageType(blob) {
  return blob.type && blob.type.startsWith("image/") ? blob.type : "image/png";
}

// ---------------------------------------------------------------------------------------------
// Models

const KIND_SELECTS = {
  classifier: "classify-model",
  forecaster: "forecast-model",
  anomaly: "anomaly-model",
  generator: "generate-model",
  detector: "detect-model",
  denoiser: "denoise-model",
  language_model: "complete-model",
};

function modelsOf(kind) {
  return state.models.filter((m) => m.kind === kind && m.versions && m.versions.length > 0);
}

function modelConfig(name) {
  const m = state.models.find((x) => x.name === name);
  return m ? m.config || {} : {};
}

async function loadModels() {
  const status = $("models-status");
  status.textContent = "Loading…";
  await run("models", async () => {
    const { resp } = await request("models");
    const body = await resp.json();
    state.models = body.models || [];
    const tbody = $("models-table").querySelector("tbody");
    tbody.replaceChildren();
    for (const m of state.models) {
      const tr = document.createElement("tr");
      tr.dataset.model = m.name;
      tr.dataset.kind = m.kind;
      const versions = (m.versions || []).map((v) => `v${v.version} (${v.engine || "?"}, ${v.device || "?"})`).join(", ") || "none";
      for (const [i, text] of [m.name, m.kind, m.state, versions, (m.config && m.config.description) || ""].entries()) {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        cell.textContent = text;
        tr.appendChild(cell);
      }
      tbody.appendChild(tr);
    }
    for (const [kind, selectId] of Object.entries(KIND_SELECTS)) {
      const select = $(selectId);
      const previous = select.value;
      const models = modelsOf(kind);
      select.replaceChildren();
      for (const m of models) {
        const opt = document.createElement("option");
        opt.value = m.name;
        opt.textContent = `${m.name} (v${m.versions.map((v) => v.version).join(", v")})`;
        if (m.config && m.config.default_for_kind) opt.selected = true;
        select.appendChild(opt);
      }
      if (models.some((m) => m.name === previous)) select.value = previous;
      setAvailable(kind, models.length > 0);
    }
    status.textContent = `${state.models.length} models loaded.`;
    onGeneratorModel();
  });
  if ($("models-error").textContent) status.textContent = "";
}

/** Disables a panel whose kind has no model loaded (and says so). */
function setAvailable(kind, available) {
  const section = document.querySelector(`section[data-kind="${kind}"]`);
  if (!section) return;
  section.dataset.available = available ? "true" : "false";
  for (const el of section.querySelectorAll("form button, form input, form select, form textarea, .row button")) {
    el.disabled = !available;
  }
  if (kind === "language_model") {
    $("complete-unavailable").hidden = available;
    $("complete-fields").disabled = !available;
    $("complete-form").hidden = !available;
    if (!available) $("complete-summary").textContent = "No language model loaded.";
    else if ($("complete-summary").textContent === "No language model loaded.") $("complete-summary").textContent = "Nothing completed yet.";
    $("complete-stop").disabled = true;
    return;
  }
  let note = section.querySelector(".unavailable");
  if (!available && !note) {
    note = document.createElement("p");
    note.className = "notice unavailable";
    note.textContent = `No ${kind} model is loaded on this server, so this panel is disabled.`;
    section.querySelector("h2").after(note);
  } else if (available && note) {
    note.remove();
  }
}

// ---------------------------------------------------------------------------------------------
// Classifier

const classify = {
  canvas: null,
  ctx: null,
  drawing: false,
  last: null,
  drawn: false,
  /** The bytes sent when they are not the drawing (a picked or sample file). */
  file: null,
  timer: 0,
};

function clearCanvas() {
  const { ctx, canvas } = classify;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  classify.drawn = false;
  classify.file = null;
}

function canvasPoint(e) {
  const r = classify.canvas.getBoundingClientRect();
  return { x: ((e.clientX - r.left) * classify.canvas.width) / r.width, y: ((e.clientY - r.top) * classify.canvas.height) / r.height };
}

function strokeTo(p) {
  const { ctx } = classify;
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(classify.last.x, classify.last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  classify.last = p;
}

function setupClassifier() {
  const canvas = $("classify-canvas");
  classify.canvas = canvas;
  classify.ctx = canvas.getContext("2d");
  clearCanvas();

  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || canvas.dataset.disabled === "true") return;
    e.preventDefault();
    if (classify.file) clearCanvas();
    canvas.setPointerCapture(e.pointerId);
    classify.drawing = true;
    clearTimeout(classify.timer);
    classify.last = canvasPoint(e);
    strokeTo(classify.last);
    classify.drawn = true;
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!classify.drawing) return;
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    for (const ce of events.length ? events : [e]) strokeTo(canvasPoint(ce));
  });
  const end = () => {
    if (!classify.drawing) return;
    classify.drawing = false;
    // Classify shortly after the pen lifts, so a digit of several strokes is sent once.
    clearTimeout(classify.timer);
    classify.timer = setTimeout(() => classifyNow(), 350);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  canvas.addEventListener("dragover", (e) => {
    e.preventDefault();
    canvas.classList.add("dragover");
  });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("dragover"));
  canvas.addEventListener("drop", (e) => {
    e.preventDefault();
    canvas.classList.remove("dragover");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) useClassifyFile(file, file.name);
  });

  $("classify-clear").addEventListener("click", () => {
    clearTimeout(classify.timer);
    clearCanvas();
    $("classify-bars").replaceChildren();
    $("classify-summary").textContent = "Canvas cleared.";
    delete $("classify-summary").dataset.label;
    showError("classify", null);
  });
  $("classify-run").addEventListener("click", () => classifyNow());
  $("classify-form").addEventListener("submit", (e) => {
    e.preventDefault();
    classifyNow();
  });
  $("classify-topk").addEventListener("change", () => {
    if (classify.drawn || classify.file) classifyNow();
  });
  $("classify-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) useClassifyFile(file, file.name);
  });
  $("classify-sample").addEventListener("change", async (e) => {
    const path = e.target.value;
    if (!path) return;
    await run("classify", async () => {
      const blob = await fetchSample(path);
      await useClassifyFile(blob, path.split("/").pop());
    });
  });
}

/** Shows a picked image on the canvas (fitted, on white) and classifies its own bytes. */
async function useClassifyFile(blob, name) {
  await run("classify", async () => {
    clearCanvas();
    const bitmap = await createImageBitmap(blob);
    const { ctx, canvas } = classify;
    const s = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * s;
    const h = bitmap.height * s;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    bitmap.close();
    classify.file = { blob, name: name || "image.png" };
  });
  await classifyNow();
}

function canvasBlob(canvas) {
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the canvas could not be encoded"))), "image/png"));
}

async function classifyNow() {
  await run("classify", async () => {
    if (!classify.drawn && !classify.file) {
      throw new ApiError(0, { error: { type: "invalid_input", message: "Draw a digit first (or pick an image file or a sample)." } });
    }
    const blob = classify.file ? classify.file.blob : await canvasBlob(classify.canvas);
    const name = classify.file ? classify.file.name : "digit.png";
    const type = imageType(blob);
    const params = { model: $("classify-model").value, top_k: $("classify-topk").value };
    const path = "classify" + query(params);
    const { resp, ms } = await request(path, { method: "POST", headers: { "content-type": type }, body: blob });
    const body = await resp.json();
    const result = body.results[0];
    renderBars(
      $("classify-bars"),
      result.top_k.map((c) => ({ name: c.label, value: c.probability, text: `${(c.probability * 100).toFixed(1)} %` })),
    );
    const summary = $("classify-summary");
    summary.textContent = `Predicted ${result.label} with probability ${(result.probability * 100).toFixed(1)} %` +
      (result.inverted ? " (the image was inverted to white on black first)." : ".");
    summary.dataset.label = result.label;
    $("classify-canvas").setAttribute("aria-label",
      `Drawing area for a digit (280 by 280 pixels); the model reads it as ${result.label}. Draw with a mouse, touch or pen; keyboard users can pick a file or a sample instead.`);
    showMeta("classify", resp, ms);
    const link = $("classify-download");
    link.href = objectUrl("classify", blob);
    link.download = name;
    link.textContent = name;
    $("classify-curl").textContent = curl([
      "curl -s -X POST",
      `-H ${sh("content-type: " + type)}`,
      `--data-binary @${sh(name)}`,
      sh(BASE + path),
    ]);
  });
}

// ---------------------------------------------------------------------------------------------
// Forecaster

const forecast = { series: [] };

function setupForecaster(data) {
  forecast.series = data.series || [];
  const select = $("forecast-series");
  for (const s of forecast.series) {
    const opt = document.createElement("option");
    opt.value = s.id;
    opt.textContent = s.title;
    select.appendChild(opt);
  }
  const custom = document.createElement("option");
  custom.value = "";
  custom.textContent = "Your own (paste it below)";
  select.appendChild(custom);
  select.addEventListener("change", () => pickSeries(select.value));
  if (forecast.series.length) pickSeries(forecast.series[0].id);
  $("forecast-values").addEventListener("input", () => {
    const s = forecast.series.find((x) => x.id === select.value);
    if (s && $("forecast-values").value !== s.values.join(", ")) select.value = "";
  });
  $("forecast-form").addEventListener("submit", (e) => {
    e.preventDefault();
    forecastNow();
  });
}

function pickSeries(id) {
  const s = forecast.series.find((x) => x.id === id);
  if (!s) return;
  $("forecast-values").value = s.values.join(", ");
  $("forecast-start").value = s.start;
  const model = $("forecast-model");
  if (Array.from(model.options).some((o) => o.value === s.model)) model.value = s.model;
  forecast.pendingModel = s.model;
}

/** Adds months to a YYYY-MM-DD date (the series are monthly, frequency "MS"). */
function addMonths(iso, k) {
  const [y, m] = iso.split("-").map(Number);
  const t = y * 12 + (m - 1) + k;
  return `${Math.floor(t / 12)}-${String((t % 12) + 1).padStart(2, "0")}-01`;
}

async function forecastNow() {
  await run("forecast", async () => {
    const series = parseNumbers($("forecast-values").value, "history");
    const start = $("forecast-start").value.trim();
    if (start && !/^\d{4}-\d{2}-\d{2}$/.test(start)) {
      throw new ApiError(0, { error: { type: "invalid_input", message: "start: use YYYY-MM-DD", field: "start" } });
    }
    const body = { model: $("forecast-model").value, series, horizon: Number($("forecast-horizon").value) };
    if (start) Object.assign(body, { start, frequency: "MS" });
    const json = JSON.stringify(body);
    const { resp, ms } = await request("forecast", { method: "POST", headers: { "content-type": "application/json" }, body: json });
    const answer = await resp.json();
    const histTimes = series.map((_, i) => (start ? addMonths(start, i) : String(i)));
    const fcTimes = answer.timestamps || answer.forecast.map((_, i) => String(series.length + i));
    drawForecast(series, histTimes, answer, fcTimes);
    const unit = (forecast.series.find((s) => s.model === answer.model) || {}).unit || "";
    const f = answer.forecast;
    $("forecast-summary").textContent =
      `${answer.model} forecast ${f.length} steps after ${series.length} of history` +
      (answer.truncated ? ` (only the last ${answer.context_used} used)` : "") +
      `: from ${fmt(f[0])} ${unit} (${fcTimes[0]}) to ${fmt(f[f.length - 1])} ${unit} (${fcTimes[fcTimes.length - 1]}).`;
    showMeta("forecast", resp, ms, `${answer.forward_passes} forward pass${answer.forward_passes === 1 ? "" : "es"}`);
    $("forecast-curl").textContent = curl([
      "curl -s",
      sh(BASE + "forecast"),
      `-H ${sh("content-type: application/json")}`,
      `-d ${sh(json)}`,
    ]);
  });
}

function drawForecast(history, histTimes, answer, fcTimes) {
  const canvas = $("forecast-chart");
  const ctx = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const pad = { l: 64, r: 16, t: 16, b: 48 };
  const f = answer.forecast;
  const q = answer.quantiles || [];
  const lo = q.length ? q[0].values : null;
  const hi = q.length ? q[q.length - 1].values : null;
  const all = history.concat(f, lo || [], hi || []);
  let ymin = Math.min(...all);
  let ymax = Math.max(...all);
  const span = ymax - ymin || 1;
  ymin -= span * 0.05;
  ymax += span * 0.05;
  const n = history.length + f.length;
  const X = (i) => pad.l + ((W - pad.l - pad.r) * i) / Math.max(1, n - 1);
  const Y = (v) => pad.t + ((H - pad.t - pad.b) * (ymax - v)) / (ymax - ymin);

  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  ctx.lineWidth = 1;

  // y grid and labels at round values (steps of 1, 2 or 5 times a power of ten)
  ctx.strokeStyle = "#dde3ea";
  ctx.fillStyle = "#4a5460";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const raw = (ymax - ymin) / 5;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  for (let v = Math.ceil(ymin / step) * step; v <= ymax; v += step) {
    const y = Y(v);
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(W - pad.r, y);
    ctx.stroke();
    ctx.fillText(v.toFixed(decimals), pad.l - 6, y);
  }
  // x labels: about 10 of them, as YYYY-MM
  const times = histTimes.concat(fcTimes);
  const every = Math.max(1, Math.ceil(n / 10));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let i = 0; i < n; i += every) {
    const x = X(i);
    ctx.strokeStyle = "#dde3ea";
    ctx.beginPath();
    ctx.moveTo(x, pad.t);
    ctx.lineTo(x, H - pad.b);
    ctx.stroke();
    ctx.fillText(String(times[i]).slice(0, 7), x, H - pad.b + 6);
  }
  ctx.strokeStyle = "#4a5460";
  ctx.beginPath();
  ctx.moveTo(pad.l, pad.t);
  ctx.lineTo(pad.l, H - pad.b);
  ctx.lineTo(W - pad.r, H - pad.b);
  ctx.stroke();

  const h0 = history.length;
  // interval band
  if (lo && hi) {
    ctx.fillStyle = "rgba(179, 71, 26, 0.18)";
    ctx.beginPath();
    ctx.moveTo(X(h0 - 1), Y(history[h0 - 1]));
    hi.forEach((v, i) => ctx.lineTo(X(h0 + i), Y(v)));
    for (let i = lo.length - 1; i >= 0; i--) ctx.lineTo(X(h0 + i), Y(lo[i]));
    ctx.closePath();
    ctx.fill();
  }
  // forecast start marker
  ctx.strokeStyle = "#7a8796";
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(X(h0 - 1), pad.t);
  ctx.lineTo(X(h0 - 1), H - pad.b);
  ctx.stroke();
  ctx.setLineDash([]);
  // lines
  const line = (points, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([i, v], k) => (k ? ctx.lineTo(X(i), Y(v)) : ctx.moveTo(X(i), Y(v))));
    ctx.stroke();
  };
  line(history.map((v, i) => [i, v]), "#0b4f8a");
  line([[h0 - 1, history[h0 - 1]]].concat(f.map((v, i) => [h0 + i, v])), "#b3471a");
  ctx.fillStyle = "#b3471a";
  f.forEach((v, i) => {
    ctx.beginPath();
    ctx.arc(X(h0 + i), Y(v), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  });

  canvas.dataset.historyPoints = String(history.length);
  canvas.dataset.forecastPoints = String(f.length);
  canvas.dataset.bandPoints = String(lo ? lo.length : 0);
  canvas.dataset.firstTimestamp = String(times[0]);
  canvas.dataset.lastTimestamp = String(times[n - 1]);
  canvas.setAttribute("aria-label",
    `Forecast chart: ${history.length} points of history from ${times[0]} to ${times[h0 - 1]}, ` +
    `then ${f.length} forecast points from ${fcTimes[0]} to ${fcTimes[fcTimes.length - 1]}` +
    (lo ? ` with a ${Math.round(q[0].level * 100)} to ${Math.round(q[q.length - 1].level * 100)} percent interval band` : "") + ".");
}

// ---------------------------------------------------------------------------------------------
// Anomaly scorer

const anomaly = { rows: [] };

function setupAnomaly(data) {
  anomaly.rows = data.rows || [];
  const select = $("anomaly-row");
  for (const r of anomaly.rows) {
    const opt = document.createElement("option");
    opt.value = r.id;
    opt.textContent = r.title;
    select.appendChild(opt);
  }
  const custom = document.createElement("option");
  custom.value = "";
  custom.textContent = "Your own (paste it below)";
  select.appendChild(custom);
  const pick = () => {
    const r = anomaly.rows.find((x) => x.id === select.value);
    if (r) $("anomaly-values").value = r.values.join(", ");
  };
  select.addEventListener("change", pick);
  pick();
  $("anomaly-values").addEventListener("input", () => (select.value = ""));
  $("anomaly-form").addEventListener("submit", (e) => {
    e.preventDefault();
    anomalyNow();
  });
}

async function anomalyNow() {
  await run("anomaly", async () => {
    const row = parseNumbers($("anomaly-values").value, "row");
    const body = { model: $("anomaly-model").value, rows: [row], top_features: Number($("anomaly-top").value) };
    const json = JSON.stringify(body);
    const { resp, ms } = await request("anomaly", { method: "POST", headers: { "content-type": "application/json" }, body: json });
    const answer = await resp.json();
    const r = answer.results[0];
    const summary = $("anomaly-summary");
    summary.textContent = `Score ${fmt(r.score)} against threshold ${fmt(r.threshold)} (${answer.threshold_source || "model"}): ` +
      (r.is_anomaly ? "anomaly (unlike the benign rows the model learned)." : "not an anomaly.");
    summary.dataset.score = String(r.score);
    summary.dataset.anomaly = String(r.is_anomaly);
    const gauge = $("anomaly-gauge");
    const top = Math.max(r.score, r.threshold) * 1.25 || 1;
    gauge.querySelector(".gauge-fill").style.width = `${(100 * r.score) / top}%`;
    gauge.querySelector(".gauge-mark").style.left = `${(100 * r.threshold) / top}%`;
    gauge.classList.toggle("anomalous", r.is_anomaly);
    renderBars(
      $("anomaly-bars"),
      (r.top_features || []).map((c) => ({
        name: c.feature,
        value: c.share,
        text: `${(c.share * 100).toFixed(1)} % (${fmt(c.value)} vs ${fmt(c.reconstructed)})`,
      })),
    );
    showMeta("anomaly", resp, ms);
    $("anomaly-curl").textContent = curl([
      "curl -s",
      sh(BASE + "anomaly"),
      `-H ${sh("content-type: application/json")}`,
      `-d ${sh(json)}`,
    ]);
  });
}

// ---------------------------------------------------------------------------------------------
// Generator

function onGeneratorModel() {
  const cfg = (modelConfig($("generate-model").value) || {}).generator || {};
  const select = $("generate-label");
  const keep = select.value;
  select.replaceChildren();
  const any = document.createElement("option");
  any.value = "";
  any.textContent = "any (random labels)";
  select.appendChild(any);
  for (let i = 0; i < (cfg.num_classes || 0); i++) {
    const opt = document.createElement("option");
    opt.value = String(i);
    opt.textContent = String(i);
    select.appendChild(opt);
  }
  select.value = Array.from(select.options).some((o) => o.value === keep) ? keep : cfg.num_classes ? "7" : "";
  if (cfg.max_n) $("generate-n").max = String(cfg.max_n);
}

function setupGenerator() {
  $("generate-model").addEventListener("change", onGeneratorModel);
  $("generate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generateNow();
  });
  $("generate-random").addEventListener("click", () => {
    $("generate-seed").value = String(Math.floor(Math.random() * 1e9));
    generateNow();
  });
}

async function generateNow() {
  await run("generate", async () => {
    const params = { model: $("generate-model").value, n: $("generate-n").value, label: $("generate-label").value, seed: $("generate-seed").value };
    const path = "generate" + query(params);
    const { resp, ms } = await request(path);
    const blob = await resp.blob();
    const img = $("generate-image");
    const loaded = new Promise((resolve) => img.addEventListener("load", resolve, { once: true }));
    img.src = objectUrl("generate", blob);
    const seed = resp.headers.get("x-seed") || params.seed;
    const what = params.label ? `digit ${params.label}` : "random digits";
    img.alt = `A grid of ${params.n} generated images (${what}), seed ${seed}`;
    img.hidden = false;
    img.dataset.sha256 = await sha256Hex(blob);
    img.dataset.seed = seed;
    img.dataset.bytes = String(blob.size);
    await loaded;
    $("generate-summary").textContent = `${params.n} images of ${what} from seed ${seed} (${blob.size} bytes of PNG, ${img.naturalWidth}×${img.naturalHeight} pixels).`;
    showMeta("generate", resp, ms);
    $("generate-curl").textContent = curl(["curl -s", sh(BASE + path), `-o ${sh("digits.png")}`]);
  });
}

// ---------------------------------------------------------------------------------------------
// Detector

const detect = { file: null };
const BOX_COLOURS = ["#b3261e", "#0b4f8a", "#146c2e", "#7b3fa0", "#9a5b00", "#006b75", "#a4144f", "#3b4a00", "#5b3a29", "#24478f"];

function setupDetector() {
  $("detect-file").addEventListener("change", (e) => {
    detect.file = e.target.files[0] || null;
    if (detect.file) detectNow();
  });
  $("detect-sample").addEventListener("click", () => {
    detect.file = null;
    $("detect-file").value = "";
    detectNow();
  });
  $("detect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    detectNow();
  });
}

async function detectNow() {
  await run("detect", async () => {
    const name = detect.file ? detect.file.name : "scene.png";
    const blob = detect.file || (await fetchSample("ui/samples/scene.png"));
    const type = imageType(blob);
    const params = { model: $("detect-model").value, score_threshold: $("detect-threshold").value };
    const path = "detect" + query(params);
    const { resp, ms } = await request(path, { method: "POST", headers: { "content-type": type }, body: blob });
    const answer = await resp.json();
    const result = answer.results[0];
    const dets = result.detections;

    const bitmap = await createImageBitmap(blob);
    const canvas = $("detect-canvas");
    const scale = Math.min(576 / bitmap.width, 384 / bitmap.height, 8);
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.textBaseline = "top";
    dets.forEach((d) => {
      const c = BOX_COLOURS[d.index % BOX_COLOURS.length];
      const b = d.box;
      const x = b.x_min * scale;
      const y = b.y_min * scale;
      ctx.strokeStyle = c;
      ctx.lineWidth = 3;
      ctx.strokeRect(x, y, (b.x_max - b.x_min) * scale, (b.y_max - b.y_min) * scale);
      const text = `${d.label} ${(d.score * 100).toFixed(0)}%`;
      const tw = ctx.measureText(text).width + 6;
      const ty = y >= 18 ? y - 18 : y;
      ctx.fillStyle = c;
      ctx.fillRect(x, ty, tw, 18);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(text, x + 3, ty + 2);
    });
    canvas.dataset.detections = String(dets.length);
    const labels = dets.map((d) => d.label);
    canvas.setAttribute("aria-label", `The scene (${result.width} by ${result.height} pixels) with ${dets.length} detected boxes` + (dets.length ? `: ${labels.join(", ")}` : ""));
    const table = $("detect-table");
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    for (const d of dets) {
      const tr = document.createElement("tr");
      const b = d.box;
      for (const [i, text] of [d.label, d.score.toFixed(3), [b.x_min, b.y_min, b.x_max, b.y_max].map((v) => v.toFixed(1)).join(", ")].entries()) {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        else cell.className = "num";
        cell.textContent = text;
        tr.appendChild(cell);
      }
      tbody.appendChild(tr);
    }
    table.hidden = dets.length === 0;
    const summary = $("detect-summary");
    summary.textContent = dets.length
      ? `${dets.length} objects found in ${name}: ${labels.join(", ")} (best score first).`
      : `No object found in ${name} above score ${answer.score_threshold}.`;
    summary.dataset.count = String(dets.length);
    showMeta("detect", resp, ms);
    $("detect-curl").textContent =
      curl(["curl -s -X POST", `-H ${sh("content-type: " + type)}`, `--data-binary @${sh(name)}`, sh(BASE + path)]) +
      "\n# the same scene with its boxes drawn:\n" +
      curl(["curl -s -X POST", `-H ${sh("content-type: " + type)}`, `--data-binary @${sh(name)}`, sh(BASE + "detect" + query({ ...params, format: "png" })), `-o ${sh("boxes.png")}`]);
  });
}

// ---------------------------------------------------------------------------------------------
// Denoiser

const denoise = { file: null };

function setupDenoiser() {
  $("denoise-file").addEventListener("change", (e) => {
    denoise.file = e.target.files[0] || null;
    if (denoise.file) denoiseNow();
  });
  $("denoise-sample").addEventListener("click", () => {
    denoise.file = null;
    $("denoise-file").value = "";
    denoiseNow();
  });
  $("denoise-form").addEventListener("submit", (e) => {
    e.preventDefault();
    denoiseNow();
  });
}

async function denoiseNow() {
  await run("denoise", async () => {
    const name = denoise.file ? denoise.file.name : "noisy-digit.png";
    const blob = denoise.file || (await fetchSample("ui/samples/noisy-digit.png"));
    const type = imageType(blob);
    const before = $("denoise-before");
    before.src = objectUrl("denoise-before", blob);
    before.alt = `Noisy input: ${name}`;
    before.hidden = false;
    const params = { model: $("denoise-model").value };
    const path = "denoise" + query(params);
    const { resp, ms } = await request(path, { method: "POST", headers: { "content-type": type }, body: blob });
    const out = await resp.blob();
    const after = $("denoise-after");
    const loaded = new Promise((resolve) => after.addEventListener("load", resolve, { once: true }));
    after.src = objectUrl("denoise-after", out);
    after.alt = `Denoised output of ${name}`;
    after.hidden = false;
    await loaded;
    after.dataset.bytes = String(out.size);
    $("denoise-summary").textContent = `Denoised ${name}: a ${after.naturalWidth}×${after.naturalHeight} PNG of ${out.size} bytes.`;
    showMeta("denoise", resp, ms);
    $("denoise-curl").textContent = curl(["curl -s -X POST", `-H ${sh("content-type: " + type)}`, `--data-binary @${sh(name)}`, sh(BASE + path), `-o ${sh("clean.png")}`]);
  });
}

// ---------------------------------------------------------------------------------------------
// Text completion, streamed as Server-Sent Events (fetch + ReadableStream: EventSource cannot POST)

const complete = { controller: null };

function setupCompletion() {
  $("complete-form").addEventListener("submit", (e) => {
    e.preventDefault();
    completeNow();
  });
  $("complete-stop").addEventListener("click", () => complete.controller && complete.controller.abort());
  $("complete-model").addEventListener("change", () => {
    const cfg = (modelConfig($("complete-model").value) || {}).language_model || {};
    if (cfg.max_tokens) $("complete-max").max = String(cfg.max_tokens);
  });
}

/** Yields {event, data} for each Server-Sent Event of a response body. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value;
    buffer = buffer.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
    if (done) return;
  }
}

async function completeNow() {
  const out = $("complete-output");
  const summary = $("complete-summary");
  await run("complete", async () => {
    const body = {
      model: $("complete-model").value,
      prompt: $("complete-prompt").value,
      max_tokens: Number($("complete-max").value),
      temperature: Number($("complete-temp").value),
      top_k: Number($("complete-topk").value),
      seed: Number($("complete-seed").value),
      stream: true,
    };
    const json = JSON.stringify(body);
    $("complete-curl").textContent = curl(["curl -sN", sh(BASE + "complete"), `-H ${sh("content-type: application/json")}`, `-d ${sh(json)}`]);
    out.textContent = "";
    out.dataset.tokens = "0";
    out.dataset.state = "streaming";
    summary.textContent = "Streaming…";
    complete.controller = new AbortController();
    $("complete-stop").disabled = false;
    $("complete-run").disabled = true;
    const t0 = performance.now();
    try {
      const { resp } = await request("complete", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: json,
        signal: complete.controller.signal,
      });
      const promptNode = document.createElement("span");
      promptNode.className = "prompt";
      promptNode.textContent = body.prompt;
      out.appendChild(promptNode);
      const text = document.createTextNode("");
      out.appendChild(text);
      let tokens = 0;
      let finished = false;
      for await (const ev of sseEvents(resp.body)) {
        const data = JSON.parse(ev.data);
        if (ev.event === "token") {
          text.appendData(data.text);
          tokens += 1;
          out.dataset.tokens = String(tokens);
        } else if (ev.event === "done") {
          finished = true;
          out.dataset.state = "done";
          const c = (data.choices || [])[0] || {};
          const u = data.usage || {};
          summary.textContent = `Done: ${tokens} tokens streamed, finish reason "${c.finish_reason}"` +
            (u.completion_tokens !== undefined ? `, ${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens` : "") +
            (data.seed !== undefined ? `, seed ${data.seed}` : "") + ".";
          showMeta("complete", resp, performance.now() - t0, resp.headers.get("x-model-name") ? undefined : data.model && `answer from ${data.model} v${data.version}`);
        } else if (ev.event === "error") {
          finished = true;
          out.dataset.state = "error";
          throw new ApiError(0, data);
        }
      }
      if (!finished) {
        out.dataset.state = "error";
        throw new ApiError(0, { error: { message: "the stream ended without a done event" } });
      }
    } catch (err) {
      if (out.dataset.state === "streaming") out.dataset.state = err.name === "AbortError" ? "stopped" : "error";
      summary.textContent = err.name === "AbortError" ? "Stopped." : "Failed.";
      throw err;
    } finally {
      complete.controller = null;
      $("complete-stop").disabled = true;
      $("complete-run").disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------

async function loadJson(path, prefix) {
  try {
    const { resp } = await request(path);
    return await resp.json();
  } catch (err) {
    showError(prefix, err);
    return {};
  }
}

async function main() {
  setupClassifier();
  setupGenerator();
  setupDetector();
  setupDenoiser();
  setupCompletion();
  $("models-refresh").addEventListener("click", loadModels);
  const [series, rows] = await Promise.all([loadJson("ui/series.json", "forecast"), loadJson("ui/rows.json", "anomaly"), loadModels()]);
  setupForecaster(series);
  setupAnomaly(rows);
  document.body.dataset.ready = "true";
}

main();
