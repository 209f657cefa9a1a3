// peach-tasks dashboard: plain JavaScript, served by the package (no CDN, no build step).
// It only reads the JSON API under /api and refreshes itself every few seconds.
"use strict";

const REFRESH_MS = 5000;
const RUNS_PAGE = 50;          // executions in the table and the graph
const ALL_LOGS_RUNS = 10;      // runs in the "all logs" view
const RUN_LOG_TAIL = 256 * 1024;

const state = {
  token: sessionStorage.getItem("peach-token") || "",
  org: null, task: null,
  runs: [], nextBefore: null, olderLoaded: false,
  logRun: null,          // null: all logs of the task; else the run shown below
  logOffset: 0, logComplete: false,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- formatting ---------------------------------------------------------------
function fmtTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "").replace(/Z$/, "") : "–";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(2)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// A run's usage: blank when it was not measured (no cgroup), so "0" is never made up.
function fmtMemory(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [unit, size] of units) {
    if (bytes >= size) {
      const shown = bytes / size;
      return `${shown < 10 ? shown.toFixed(1) : Math.round(shown)} ${unit}`;
    }
  }
  return `${bytes} B`;
}

function fmtCpu(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return `${seconds < 100 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}

function badge(value) {
  return value ? el("span", { class: `badge ${value}`, text: value }) : "–";
}

// "STALE"/"FRESH" against the task's freshness (its title says the limit); "–" without one.
function freshness(task) {
  if (task.stale === null || task.stale === undefined) return "–";
  const node = badge(task.stale ? "STALE" : "FRESH");
  const since = task.last_success_at ? `last success ${fmtTime(task.last_success_at)} UTC` : "no success yet";
  node.title = `freshness ${fmtDuration(task.freshness_s)}; ${since}`;
  return node;
}

function setStatus(text, isError = false) {
  const node = $("status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// -- API ------------------------------------------------------------------------
class AuthNeeded extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new Error("cannot reach the peach-tasks server");
  }
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token-error").textContent = state.token ? "that token was refused" : "";
    throw new AuthNeeded("a token is needed");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (err) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

const enc = encodeURIComponent;
const taskPath = () => `/api/organisations/${enc(state.org)}/tasks/${enc(state.task)}`;

// -- URL hash keeps the selection across reloads -------------------------------
function saveHash() {
  const parts = [];
  if (state.org) parts.push(`org=${enc(state.org)}`);
  if (state.task) parts.push(`task=${enc(state.task)}`);
  if (state.logRun) parts.push(`run=${state.logRun}`);
  history.replaceState(null, "", parts.length ? `#${parts.join("&")}` : location.pathname);
}

function readHash() {
  const found = {};
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [key, value] = part.split("=");
    if (key && value) found[key] = decodeURIComponent(value);
  }
  return found;
}

// -- organisations and tasks ---------------------------------------------------
async function loadOrganisations(wanted) {
  const orgs = await api("/api/organisations");
  const select = $("org");
  const current = wanted || state.org || select.value;
  select.replaceChildren(...orgs.map((o) => el("option", { value: o.codops, text: `${o.codops} (${o.tasks})` })));
  if (!orgs.length) {
    select.append(el("option", { value: "", text: "no organisations yet" }));
    state.org = null;
    return;
  }
  state.org = orgs.some((o) => o.codops === current) ? current : orgs[0].codops;
  select.value = state.org;
}

async function loadTasks() {
  if (!state.org) {
    $("tasks").tBodies[0].replaceChildren();
    $("no-tasks").hidden = false;
    return;
  }
  const listing = await api(`/api/organisations/${enc(state.org)}/tasks`);
  $("tasks-count").textContent = `(${listing.tasks.length})`;
  $("no-tasks").hidden = listing.tasks.length > 0;
  $("problems").replaceChildren(...listing.problems.map((p) => el("li", {
    text: `${p.kind} · ${p.file ? (p.line ? `${p.file}:${p.line}` : p.file) : p.scope}: ${p.message}`,
  })));
  $("tasks").tBodies[0].replaceChildren(...listing.tasks.map((t) => {
    const row = el("tr", { "data-task": t.name, class: t.name === state.task ? "selected" : "",
                           onclick: () => selectTask(t.name) },
      el("td", {}, el("button", { class: "task-name", type: "button", text: t.name })),
      el("td", { text: t.loop }),
      el("td", {}, badge(t.state)),
      el("td", {}, badge(t.last_status)),
      el("td", { text: fmtTime(t.last_started_at) }),
      el("td", { class: "num", text: fmtDuration(t.last_duration_s) }),
      el("td", {}, el("code", { text: t.version || "–" })),
      el("td", { class: "num", text: String(t.successes) }),
      el("td", { class: "num", text: String(t.failures) }),
      el("td", { class: "freshness" }, freshness(t)));
    if (t.problems.length) row.title = t.problems.map((p) => p.message).join("\n");
    return row;
  }));
  if (state.task && !listing.tasks.some((t) => t.name === state.task)) clearTask();
}

function clearTask() {
  state.task = null;
  state.logRun = null;
  $("task-section").hidden = true;
  $("logs-section").hidden = true;
  $("outputs-section").hidden = true;
  saveHash();
}

async function selectTask(name) {
  state.task = name;
  state.logRun = null;
  state.olderLoaded = false;
  for (const row of $("tasks").tBodies[0].rows) row.classList.toggle("selected", row.dataset.task === name);
  $("task-title").textContent = `${state.org}/${name}`;
  $("task-section").hidden = false;
  $("logs-section").hidden = false;
  $("log").textContent = "";
  saveHash();
  await guarded(async () => { await loadRuns(); await loadLogs(true); await loadOutputs(); });
}

// -- executions -----------------------------------------------------------------
async function loadRuns() {
  const page = await api(`${taskPath()}/runs?limit=${RUNS_PAGE}`);
  if (state.olderLoaded && state.runs.length) {
    // Keep the older pages the user asked for; replace only the newest page.
    const oldest = page.runs.length ? page.runs[page.runs.length - 1].id : Infinity;
    state.runs = page.runs.concat(state.runs.filter((r) => r.id < oldest));
  } else {
    state.runs = page.runs;
    state.nextBefore = page.next_before;
  }
  renderRuns();
  drawGraph();
}

async function loadOlder() {
  if (!state.nextBefore) return;
  const page = await api(`${taskPath()}/runs?limit=${RUNS_PAGE}&before=${state.nextBefore}`);
  state.runs = state.runs.concat(page.runs);
  state.nextBefore = page.next_before;
  state.olderLoaded = true;
  renderRuns();
  drawGraph();
}

function renderRuns() {
  $("older").hidden = !state.nextBefore;
  $("runs").tBodies[0].replaceChildren(...state.runs.map((r) => el("tr", {
    "data-run": r.id, class: r.id === state.logRun ? "selected" : "" },
    el("td", { class: "num", text: String(r.id) }),
    el("td", {}, el("code", { text: r.version || "–" })),
    el("td", { text: fmtTime(r.started_at) }),
    el("td", {}, badge(r.status)),
    el("td", { class: "num", text: fmtDuration(r.duration_s) }),
    el("td", { class: "num usage", "data-testid": `memory-${r.id}`, text: fmtMemory(r.peak_memory_bytes) }),
    el("td", { class: "num usage", "data-testid": `cpu-${r.id}`, text: fmtCpu(r.cpu_seconds) }),
    el("td", { class: "error-cell", title: r.error || "", text: r.error || "" }),
    el("td", {}, el("button", { type: "button", "data-testid": `show-below-${r.id}`, text: "show below",
                                onclick: () => showRun(r.id) })))));
}

// -- the graph: duration per execution; blue dot success, red cross failure ----------
function drawGraph() {
  const graph = $("graph");
  const W = 640, H = 240, left = 58, right = 14, top = 14, bottom = 34;
  const points = state.runs.filter((r) => r.duration_s !== null && r.status !== "RUNNING").slice().reverse();
  const max = Math.max(...points.map((r) => r.duration_s), 0.001) * 1.1;
  const x = (i) => left + (points.length < 2 ? (W - left - right) / 2 : i * (W - left - right) / (points.length - 1));
  const y = (d) => top + (H - top - bottom) * (1 - d / max);
  const nodes = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(value), y2: y(value) }),
               svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, fmtDuration(value)));
  }
  nodes.push(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: H - bottom }),
             svg("line", { class: "axis", x1: left, x2: W - right, y1: H - bottom, y2: H - bottom }));
  if (!points.length) {
    nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no finished executions yet"));
  } else {
    nodes.push(svg("polyline", { class: "trend", points: points.map((r, i) => `${x(i)},${y(r.duration_s)}`).join(" ") }));
    nodes.push(svg("text", { x: left, y: H - 10 }, fmtTime(points[0].started_at)));
    if (points.length > 1) {
      nodes.push(svg("text", { x: W - right, y: H - 10, "text-anchor": "end" }, fmtTime(points[points.length - 1].started_at)));
    }
    points.forEach((r, i) => nodes.push(marker(r, x(i), y(r.duration_s))));
  }
  graph.replaceChildren(...nodes);
}

function marker(run, cx, cy) {
  const title = svg("title", {}, `run ${run.id} · ${run.status} · ${fmtDuration(run.duration_s)} · ${fmtTime(run.started_at)}`);
  const selected = run.id === state.logRun ? " selected" : "";
  const common = { "data-run": run.id, onclick: () => showRun(run.id) };
  if (run.status === "SUCCESS") {
    return svg("circle", { ...common, class: `point success${selected}`, cx, cy, r: 4.5 }, title);
  }
  if (run.status === "FAILURE" || run.status === "TIMEOUT") {
    const s = 5;
    return svg("path", { ...common, class: `point failure${selected}`,
      d: `M${cx - s},${cy - s}L${cx + s},${cy + s}M${cx - s},${cy + s}L${cx + s},${cy - s}` }, title);
  }
  return svg("circle", { ...common, class: `point abandoned${selected}`, cx, cy, r: 4 }, title);
}

// -- logs: all of the task's by default, or one run's ("show below") -------------------
async function loadLogs(reset) {
  if (state.logRun === null) {
    const logs = await api(`${taskPath()}/logs?runs=${ALL_LOGS_RUNS}`);
    $("logs-title").textContent = `Logs of the last ${logs.runs.length} executions`;
    $("show-all").hidden = true;
    setLog(logs.text || "no logs yet", true);
    return;
  }
  if (reset) {
    state.logOffset = 0;
    state.logComplete = false;
    const piece = await api(`/api/runs/${state.logRun}/log?tail=${RUN_LOG_TAIL}`);
    const note = piece.offset > 0 ? `[the first ${piece.offset} bytes of this log are not shown]\n` : "";
    $("logs-title").textContent = `Log of run ${state.logRun}`;
    $("show-all").hidden = false;
    setLog(note + piece.text, true);
    state.logOffset = piece.next_offset;
    state.logComplete = piece.complete;
    return;
  }
  // A run still going: fetch only what was written since the last poll.
  while (!state.logComplete) {
    const piece = await api(`/api/runs/${state.logRun}/log?offset=${state.logOffset}`);
    if (piece.text) setLog(piece.text, false);
    const moved = piece.next_offset !== state.logOffset;
    state.logOffset = piece.next_offset;
    state.logComplete = piece.complete;
    if (!moved) break;
  }
}

function setLog(text, replace) {
  const pre = $("log");
  if (replace && pre.textContent === text) return;  // unchanged: keep the reader's place
  if (replace) pre.replaceChildren(...logNodes(text)); else pre.append(...logNodes(text));
  if ($("follow").checked) pre.scrollTop = pre.scrollHeight;
}

// The marker line before each run and the scheduler's notes stand out from task output.
function logNodes(text) {
  const nodes = [];
  let plain = "";
  for (const line of text.split(/(?<=\n)/)) {
    const kind = line.startsWith("===== run ") ? "run-marker" : (line.startsWith("[peach-tasks: ") ? "note" : null);
    if (!kind) { plain += line; continue; }
    if (plain) nodes.push(document.createTextNode(plain));
    plain = "";
    nodes.push(el("span", { class: kind, text: line }));
  }
  if (plain) nodes.push(document.createTextNode(plain));
  return nodes;
}

async function showRun(runId) {
  state.logRun = runId;
  saveHash();
  renderRuns();
  drawGraph();
  await guarded(async () => { await loadLogs(true); await loadOutputs(); });
  $("logs-section").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function showAll() {
  state.logRun = null;
  saveHash();
  renderRuns();
  drawGraph();
  await guarded(async () => { await loadLogs(true); await loadOutputs(); });
}

// -- refreshing -------------------------------------------------------------------
async function guarded(work) {
  try {
    await work();
    const now = new Date().toISOString().replace("T", " ").slice(0, 19);
    setStatus(`updated ${now} UTC · refreshes every ${REFRESH_MS / 1000} s`);
    return true;
  } catch (err) {
    setStatus(err instanceof AuthNeeded ? "an access token is needed" : String(err.message || err), true);
    return false;
  }
}

async function refresh() {
  if (state.busy || document.hidden) return;
  state.busy = true;
  try {
    await guarded(async () => {
      await loadOrganisations();
      await loadTasks();
      if (state.task) {
        await loadRuns();
        await loadLogs(false);
        await loadOutputs();
      }
    });
  } finally {
    state.busy = false;
  }
}

async function start() {
  $("org").addEventListener("change", async (event) => {
    state.org = event.target.value;
    clearTask();
    await guarded(loadTasks);
  });
  $("older").addEventListener("click", () => guarded(loadOlder));
  $("show-all").addEventListener("click", showAll);
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("peach-token", state.token);
    if (await guarded(async () => { await loadOrganisations(); await loadTasks(); })) $("token-form").hidden = true;
  });
  const wanted = readHash();
  const ok = await guarded(async () => { await loadOrganisations(wanted.org); await loadTasks(); });
  if (ok && wanted.task && state.org === wanted.org) {
    await selectTask(wanted.task);
    if (wanted.run) await showRun(Number(wanted.run));
  }
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
