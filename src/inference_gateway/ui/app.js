// The gateway's page: pick a model, drop images, see the top classes (and, for a version with
// a model-quality reference, how typical the answer is of it) and the timings.
// Plain JavaScript, no build step, no third-party code. It calls only this gateway's
// public API (GET /models, POST /models/{name}[/versions/{version}]/predict) and
// stores nothing: no cookies, no storage, object URLs revoked when results are cleared.
// Where the gateway needs an API key, a person pastes one: it is kept in a variable of
// this module (gone with the tab) and sent, as X-API-Key, only with the calls above.

const STAGES = ["preprocess", "queue", "inference", "total"];
const STAGE_NOTES = {
  preprocess: "decode and resize",
  queue: "waiting for the model",
  inference: "forward pass",
  total: "in the gateway",
};

// How typical an answer is of its version's reference (the `quality` object): a signal
// is unusual when at most UNUSUAL_PERCENT of the reference lies below it (percentile <= 5)
// or at most UNUSUAL_PERCENT above it (>= 95) -- the server's own low-confidence bound
// (the reference's 5th percentile of confidence), used on both tails of every signal.
const UNUSUAL_PERCENT = 5;
// Each signal's words, in the order shown: [below most of the reference, above most of
// it, what is compared]. The answer's signals first, then the image's.
const ANSWERS = "the reference's answers";
const IMAGES = "the reference images";
const SIGNAL_WORDS = {
  confidence: ["less confident than", "more confident than", ANSWERS],
  margin: ["a closer call between its top two classes than", "a clearer lead over its second class than", ANSWERS],
  entropy: ["less spread over the classes than", "more spread over the classes than", ANSWERS],
  luminance: ["darker than", "brighter than", IMAGES],
  contrast: ["lower contrast than", "higher contrast than", IMAGES],
  sharpness: ["less sharp than", "sharper than", IMAGES],
  saturation: ["less colourful than", "more colourful than", IMAGES],
  jpeg_quality: ["more compressed than", "less compressed than", IMAGES],
  pixels: ["smaller than", "larger than", IMAGES],
  aspect_ratio: ["taller in proportion than", "wider in proportion than", IMAGES],
};

const $ = (id) => document.getElementById(id);
const modelSelect = $("model");
const versionSelect = $("version");
const topKInput = $("top-k");
const modelsStatus = $("models-status");
const fileInput = $("files");
const dropZone = $("drop");
const results = $("results");
const empty = $("empty");
const clearButton = $("clear");
const keySection = $("key");
const keyInput = $("api-key");
const keyStatus = $("key-status");
const useKeyButton = $("use-key");
const forgetKeyButton = $("forget-key");
const traceUrlTemplate = document.body.dataset.traceUrl || "";
const keyRequired = document.body.dataset.apiKeys === "required";
const TOP_K_MAX = Number(topKInput.max) || 20;

let models = [];
// The API key a person pasted: only ever in this variable, never in storage, a cookie
// or the page; sent only to this gateway (same-origin calls) in the X-API-Key header.
let apiKey = "";
const objectUrls = new Set();
let queue = Promise.resolve();

/** An element with a class and text, built without HTML parsing. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function formatMs(ms) {
  return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
}

function percent(confidence) {
  return `${(confidence * 100).toFixed(1)}%`;
}

/** `preprocess;dur=11.178, queue;dur=0.228, ...` as {preprocess: 11.178, ...}. */
export function parseServerTiming(header) {
  const timings = {};
  for (const entry of (header || "").split(",")) {
    const [name, ...params] = entry.trim().split(";");
    if (!name) continue;
    for (const param of params) {
      const [key, value] = param.trim().split("=");
      if (key === "dur" && value !== undefined && Number.isFinite(Number(value))) {
        timings[name.trim()] = Number(value);
      }
    }
  }
  return timings;
}

/** Whether a W3C traceparent says the trace was kept: true, false, or null (none). */
export function traceKept(traceparent) {
  const parts = (traceparent || "").trim().split("-");
  if (parts.length < 4 || !/^[0-9a-f]{2}$/i.test(parts[3])) return null;
  return (parseInt(parts[3], 16) & 1) === 1;
}

/** Where TRACE_UI_URL points for a trace id, or null (unset, or not http/https). */
function traceLink(traceId) {
  if (!traceUrlTemplate || !traceId) return null;
  try {
    const url = new URL(traceUrlTemplate.replaceAll("{trace_id}", encodeURIComponent(traceId)));
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

// --- the API key

/** The headers of the page's API calls: JSON answers, and the key if one is in use. */
function apiHeaders() {
  const headers = { Accept: "application/json" };
  if (apiKey) headers["X-API-Key"] = apiKey;
  return headers;
}

/** Show the key field with `message` and move the focus there. */
function askForKey(message) {
  keySection.hidden = false;
  keyInput.setAttribute("aria-invalid", "true");
  keyStatus.textContent = message;
  keyInput.focus();
}

/** The gateway answered 401: the key is missing or not valid; lead the person to it. */
function keyRefused(problem) {
  const had = apiKey !== "";
  apiKey = "";
  keyInput.placeholder = "";
  forgetKeyButton.hidden = true;
  const why = problem.detail ? ` ${problem.detail}` : "";
  askForKey(
    had
      ? `The gateway refused this key (401).${why} Paste a valid key and choose Use key.`
      : `The gateway needs an API key (401).${why} Paste one and choose Use key.`,
  );
}

function useKey() {
  const value = keyInput.value.trim();
  if (!value) {
    askForKey("Paste an API key first.");
    return;
  }
  // A header value is printable ASCII; a pasted line break or a stray character would
  // make the browser refuse the request, which would look like a network error.
  if (!/^[\x21-\x7e]+$/.test(value)) {
    askForKey("That is not an API key: a key is letters, digits and punctuation, without spaces.");
    return;
  }
  apiKey = value;
  keyInput.value = ""; // the key lives in the variable only, not in the field
  keyInput.removeAttribute("aria-invalid");
  keyInput.placeholder = "a key is in use";
  forgetKeyButton.hidden = false;
  keyStatus.textContent = "Key in use: listing the models with it…";
  loadModels();
}

function forgetKey() {
  apiKey = "";
  keyInput.value = "";
  keyInput.placeholder = "";
  forgetKeyButton.hidden = true;
  keyStatus.textContent = "The key is forgotten: paste one to ask the gateway again.";
  keyInput.focus();
}

// --- models

async function loadModels() {
  if (keyRequired && !apiKey) {
    keySection.hidden = false;
    keyStatus.textContent = "This gateway needs an API key: paste one to list its models.";
    modelsStatus.textContent = "The models are listed once an API key is in use.";
    return;
  }
  let response;
  try {
    response = await fetch("/models", { headers: apiHeaders() });
  } catch {
    modelsStatus.textContent = "Could not reach the gateway to list the models.";
    return;
  }
  if (!response.ok) {
    const problem = await readProblem(response);
    modelsStatus.textContent = `Could not list the models: ${problem.title} (${problem.status}).${problem.detail ? ` ${problem.detail}` : ""}`;
    if (response.status === 401) keyRefused(problem);
    return;
  }
  let body;
  try {
    body = await response.json();
  } catch {
    modelsStatus.textContent = `Could not list the models: the answer was not JSON (${contentType(response)}).`;
    return;
  }
  try {
    showModels(body);
  } catch {
    modelsStatus.textContent = "Could not list the models: the answer is not a list of models.";
  }
}

/** Fill the model list from GET /models's answer; keep the person's choice if still listed. */
function showModels(body) {
  const chosen = modelSelect.value;
  models = body.models || [];
  if (models.length === 0) {
    modelsStatus.textContent = "This gateway serves no model yet.";
    return;
  }
  const listed = (name) => models.some((m) => m.name === name);
  const preselected = listed(chosen) ? chosen : listed(body.default_model) ? body.default_model : models[0].name;
  modelSelect.replaceChildren(
    ...models.map((m) => {
      const option = el("option", null, m.state === "READY" ? m.name : `${m.name} (${m.state.toLowerCase()})`);
      option.value = m.name;
      option.selected = m.name === preselected;
      return option;
    }),
  );
  modelSelect.disabled = false;
  fillVersions();
  modelsStatus.textContent = `${models.length} model${models.length === 1 ? "" : "s"} available.`;
  if (apiKey) keyStatus.textContent = "Key in use.";
}

function fillVersions() {
  const model = models.find((m) => m.name === modelSelect.value);
  const options = [];
  const latest = el(
    "option",
    null,
    model && model.default_version ? `Latest serving (${model.default_version})` : "Latest serving",
  );
  latest.value = "";
  options.push(latest);
  for (const version of model ? model.versions : []) {
    const label = version.state === "READY" ? version.version : `${version.version} (${version.state.toLowerCase()})`;
    const option = el("option", null, label);
    option.value = version.version;
    options.push(option);
  }
  versionSelect.replaceChildren(...options);
  versionSelect.disabled = false;
}

// --- predictions

function contentType(response) {
  return (response.headers.get("Content-Type") || "no content type").split(";")[0].trim();
}

async function readProblem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const title = body && typeof body.title === "string" ? body.title : response.statusText || "Error";
  let detail = body && typeof body.detail === "string" ? body.detail : "";
  if (body === null) {
    detail = `The answer was not the gateway's JSON (${contentType(response)}): something between this page and the gateway may have answered.`;
  }
  return {
    title,
    detail,
    status: response.status,
    requestId: (body && body.request_id) || response.headers.get("X-Request-ID"),
    retryAfter: response.headers.get("Retry-After"),
  };
}

function predictUrl(model, version, topK) {
  let path = `/models/${encodeURIComponent(model)}`;
  if (version) path += `/versions/${encodeURIComponent(version)}`;
  return `${path}/predict?top_k=${topK}&quality=true`;
}

/** The number of classes to ask for: the field's value rounded into 1..20, or the
 * gateway's default (TOP_K_DEFAULT, the field's initial value) when it is not a number.
 * The field then shows the number asked for. */
function chosenTopK() {
  const typed = topKInput.value.trim();
  const value = Number(typed);
  const fallback = Number(topKInput.defaultValue) || 5;
  const topK = typed === "" || !Number.isFinite(value) ? fallback : Math.min(Math.max(Math.round(value), 1), TOP_K_MAX);
  topKInput.value = String(topK);
  return topK;
}

function addCards(files) {
  const images = Array.from(files).filter((f) => f instanceof File);
  if (images.length === 0) return;
  const fragment = document.createDocumentFragment();
  for (const file of images) {
    const card = newCard(file);
    fragment.append(card.node);
    const request = { model: modelSelect.value, version: versionSelect.value, topK: chosenTopK() };
    // One at a time, in order: the timings then describe one request each.
    queue = queue.then(() =>
      classify(file, card, request).catch(() =>
        showProblem(card, { title: "Something went wrong", detail: "This page could not show the answer.", status: 0 }),
      ),
    );
  }
  results.prepend(fragment);
  empty.hidden = true;
  clearButton.hidden = false;
}

function newCard(file) {
  const node = el("li", "card");
  node.setAttribute("aria-busy", "true");
  const figure = el("figure", "thumb");
  const noPreview = () => el("span", "no-preview", "No preview");
  if (file.type.startsWith("image/")) {
    const img = el("img");
    img.alt = "";
    img.decoding = "async";
    const url = URL.createObjectURL(file);
    objectUrls.add(url);
    img.src = url;
    // Not an image the browser can show (a corrupt file, a TIFF): say so instead.
    img.addEventListener("error", () => img.replaceWith(noPreview()));
    figure.append(img);
  } else {
    figure.append(noPreview());
  }
  const body = el("div", "card-body");
  const heading = el("h3", "file-name", file.name || "pasted image");
  const status = el("p", "status", "Classifying…");
  body.append(heading, status);
  node.append(figure, body);
  return { node, body, status };
}

async function classify(file, card, request) {
  if (!request.model) {
    if (keyRequired && !apiKey) {
      showProblem(card, { title: "API key needed", detail: "Paste an API key above: the models are listed with it.", status: 0 });
      askForKey("This gateway needs an API key: paste one, choose Use key, then the image again.");
      return;
    }
    showProblem(card, { title: "No model", detail: "This gateway lists no model to ask.", status: 0 });
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name || "image");
  const started = performance.now();
  let response;
  try {
    response = await fetch(predictUrl(request.model, request.version, request.topK), {
      method: "POST",
      body: form,
      headers: apiHeaders(),
    });
  } catch {
    showProblem(card, {
      title: "The gateway could not be reached",
      detail: "The request did not get an answer; check that the gateway is running.",
      status: 0,
    });
    return;
  }
  const roundTrip = performance.now() - started;
  if (!response.ok) {
    const problem = await readProblem(response);
    showProblem(card, problem);
    if (response.status === 401) keyRefused(problem);
    return;
  }
  let body;
  try {
    body = await response.json();
  } catch {
    showProblem(card, {
      title: "Unreadable answer",
      detail: `The answer was not the gateway's JSON (${contentType(response)}): something between this page and the gateway may have answered.`,
      status: response.status,
    });
    return;
  }
  showPrediction(card, body, response, roundTrip);
}

function finish(card, ok) {
  card.node.removeAttribute("aria-busy");
  card.node.classList.add(ok ? "ok" : "failed");
  card.status.remove();
}

function showProblem(card, problem) {
  finish(card, false);
  const box = el("div", "problem");
  const title = el("p", "problem-title", problem.title);
  if (problem.status) title.append(el("span", "problem-status", ` (${problem.status})`));
  box.append(title);
  if (problem.detail) box.append(el("p", "problem-detail", problem.detail));
  if (problem.retryAfter) {
    box.append(el("p", "problem-retry", `The gateway asks to try again in ${problem.retryAfter} s.`));
  }
  card.body.append(box);
  if (problem.requestId) card.body.append(idsLine(problem.requestId, null, null));
}

function showPrediction(card, body, response, roundTrip) {
  finish(card, true);
  const image = body.image || {};
  const model = body.model || {};
  card.body.append(
    el(
      "p",
      "meta",
      `${(image.format || "?").toUpperCase()} · ${image.width} × ${image.height} px · ${formatBytes(image.size_bytes || 0)} · ${model.name} v${model.version} (${model.backend})`,
    ),
  );

  const list = el("ol", "predictions");
  list.setAttribute("aria-label", "Top classes");
  for (const [rank, p] of (body.predictions || []).entries()) {
    const item = el("li", rank === 0 ? "prediction top" : "prediction");
    const label = el("span", "label", p.label);
    label.title = `class ${p.class_id}`;
    const value = el("span", "pct", percent(p.confidence));
    const bar = el("span", "bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = el("span", "fill");
    fill.style.width = `${Math.max(p.confidence * 100, 0.5)}%`;
    bar.append(fill);
    item.append(label, value, bar);
    list.append(item);
  }
  card.body.append(list);

  const kept = traceKept(response.headers.get("traceparent"));
  const top = (body.predictions || [])[0];
  // A low-confidence answer's trace is kept: said where there is a trace the header does
  // not say was dropped.
  const traceKeptNote = body.trace_id && kept !== false;
  const quality = qualityBlock(body.quality, top && top.label, traceKeptNote);
  if (quality) card.body.append(quality);

  const timings = parseServerTiming(response.headers.get("Server-Timing"));
  card.body.append(waterfall(timings, roundTrip));
  card.body.append(idsLine(body.request_id || response.headers.get("X-Request-ID"), body.trace_id, kept));
}

const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

/** What is unusual about an answer against its version's reference, as lines of words:
 * [{signal, text, title}]; and how many signals could be read at all. Signals whose
 * percentile is not a number in 0..100 (or that this page has no words for) are skipped. */
function unusualLines(quality, label, traceKeptNote) {
  const signals = isObject(quality.signals) ? quality.signals : {};
  const lines = [];
  let read = 0;
  if (quality.class_in_reference === false) {
    const named = typeof label === "string" && label ? ` (${label})` : "";
    lines.push({ signal: "class", text: `a class the reference never saw${named}`, title: "" });
  }
  const traceNote = traceKeptNote ? ": its trace is kept" : "";
  let lowConfidenceSaid = false;
  for (const [signal, [below, above, of]] of Object.entries(SIGNAL_WORDS)) {
    const entry = signals[signal];
    const percentile = isObject(entry) ? entry.reference_percentile : undefined;
    if (typeof percentile !== "number" || !Number.isFinite(percentile) || percentile < 0 || percentile > 100) continue;
    read += 1;
    const low = percentile <= UNUSUAL_PERCENT;
    if (!low && percentile < 100 - UNUSUAL_PERCENT) continue;
    // Floored: "darker than 96%" is never more than the reference says.
    const share = Math.floor(low ? 100 - percentile : percentile);
    let text = `${low ? below : above} ${share}% of ${of}`;
    if (signal === "confidence" && low && quality.low_confidence === true) {
      text += traceNote;
      lowConfidenceSaid = true;
    }
    const value = typeof entry.value === "number" && Number.isFinite(entry.value) ? `${entry.value}` : "?";
    lines.push({ signal, text, title: `${signal} ${value}: reference percentile ${percentile}` });
  }
  if (quality.low_confidence === true && !lowConfidenceSaid) {
    // Below the reference's 5th percentile of confidence (the server's flag), whatever
    // the percentile said: first among the answer's lines.
    const at = lines.length > 0 && lines[0].signal === "class" ? 1 : 0;
    lines.splice(at, 0, {
      signal: "low_confidence",
      text: `less confident than 95% of ${ANSWERS}${traceNote}`,
      title: "",
    });
  }
  return { lines, read };
}

/** The answer's `quality` object in words under the classes: each unusual signal, or one
 * line saying the answer is typical; null without a quality object (or nothing to say). */
function qualityBlock(quality, label, traceKeptNote) {
  if (!isObject(quality)) return null;
  const { lines, read } = unusualLines(quality, label, traceKeptNote);
  const images = quality.reference_images;
  const count =
    Number.isInteger(images) && images > 0 ? ` (${images} image${images === 1 ? "" : "s"})` : "";
  const block = el("div", "quality");
  if (lines.length === 0) {
    if (read === 0) return null; // no signal could be read: nothing to say either way
    block.append(el("p", "quality-typical", `Typical of the reference${count}`));
    return block;
  }
  block.classList.add("unusual");
  block.append(el("p", "quality-title", `Unusual for the reference${count}:`));
  const list = el("ul", "quality-lines");
  for (const line of lines) {
    const item = el("li", "quality-line", line.text);
    item.dataset.signal = line.signal;
    if (line.title) item.title = line.title;
    list.append(item);
  }
  block.append(list);
  return block;
}

function waterfall(timings, roundTrip) {
  const figure = el("figure", "waterfall");
  figure.append(el("figcaption", null, "Where the time went (Server-Timing)"));
  const total = timings.total || 0;
  const scale = Math.max(total, roundTrip, 0.001);
  const rows = el("ul", "stages");
  let offset = 0;
  const addRow = (name, note, start, duration, className) => {
    const row = el("li", `stage ${className}`);
    row.dataset.stage = name;
    const label = el("span", "stage-name", name);
    label.title = note;
    const track = el("span", "track");
    track.setAttribute("aria-hidden", "true");
    const segment = el("span", "segment");
    segment.style.marginLeft = `${(start / scale) * 100}%`;
    segment.style.width = `${Math.max((duration / scale) * 100, 0.4)}%`;
    track.append(segment);
    const ms = el("span", "stage-ms", formatMs(duration));
    row.append(label, track, ms);
    rows.append(row);
  };
  for (const stage of STAGES) {
    if (!(stage in timings)) continue;
    const duration = timings[stage];
    // The stages run one after another; total spans them and the rest (the upload
    // read, top-k, the answer).
    addRow(stage, STAGE_NOTES[stage], stage === "total" ? 0 : offset, duration, stage);
    if (stage !== "total") offset += duration;
  }
  addRow("round trip", "seen by this browser: the upload, the network and the gateway", 0, roundTrip, "round-trip");
  figure.append(rows);
  return figure;
}

function idsLine(requestId, traceId, kept) {
  const line = el("p", "ids");
  if (requestId) {
    line.append("Request ", el("code", "request-id", requestId));
  }
  if (traceId) {
    line.append(" · Trace ");
    const link = kept === false ? null : traceLink(traceId);
    if (link) {
      const a = el("a", "trace-id", traceId);
      a.href = link;
      a.rel = "noreferrer noopener";
      a.target = "_blank";
      line.append(a);
    } else {
      line.append(el("code", "trace-id", traceId));
    }
    const note = kept === null ? "" : kept ? "kept" : "not kept (sampled out)";
    if (note) line.append(" ", el("span", kept ? "trace-kept" : "trace-dropped", note));
  }
  return line;
}

function clearResults() {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls.clear();
  results.replaceChildren();
  empty.hidden = false;
  clearButton.hidden = true;
  fileInput.focus();
}

// --- wiring

modelSelect.addEventListener("change", fillVersions);
fileInput.addEventListener("change", () => {
  addCards(fileInput.files);
  fileInput.value = "";
});
clearButton.addEventListener("click", clearResults);
useKeyButton.addEventListener("click", useKey);
forgetKeyButton.addEventListener("click", forgetKey);
keyInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    useKey();
  }
});

document.addEventListener("paste", (event) => {
  const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
  if (files.length > 0) {
    event.preventDefault();
    addCards(files);
  }
});

// Dropping anywhere on the page adds the files (and keeps the browser from opening them).
let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  event.preventDefault();
  dragDepth += 1;
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(dragDepth - 1, 0);
  if (dragDepth === 0) dropZone.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  dropZone.classList.remove("dragging");
  if (event.dataTransfer) addCards(event.dataTransfer.files);
});

loadModels();
