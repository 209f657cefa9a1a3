// peach-tasks dashboard: plain JavaScript modules served by the package (no CDN, no build step).
// It reads the JSON API under /api, refreshes itself, and writes one thing: a trigger ("Run now").
//
// Views, chosen by the address's hash: the overview (no hash), an organisation's tasks
// (#org=C), a task's executions, details and logs (#org=C&task=T, &run=N for one run's log).
"use strict";

import { $, el, badge, when, api, post, enc, session, AuthNeeded, problemText } from "./dom.js";
import { fmtDuration, fmtMemory, fmtCpu, plural, utcText } from "./format.js";
import { drawGraph } from "./graph.js";
import { renderOverview } from "./overview.js";
import { renderDetails } from "./details.js";
import { loadOutputs } from "./outputs.js";

const REFRESH_MS = 5000;
const LIVE_MS = 1000;          // while a triggered run is awaited or a shown log grows
const RUNS_PAGE = 50;          // executions in the table and the graph
const ALL_LOGS_RUNS = 10;      // runs in the "all logs" view
const RUN_LOG_TAIL = 256 * 1024;
const ERROR_CLAMP = 90;        // longer errors get a "full error" button
const STATUS_FILTERS = { "": [], SUCCESS: ["SUCCESS"], FAILED: ["FAILURE", "TIMEOUT"], RUNNING: ["RUNNING"],
                         ABANDONED: ["ABANDONED"] };

const state = {
  org: null, task: null, taskRow: null,
  runs: [], nextBefore: null, olderLoaded: false, versions: new Set(),
  logRun: null,          // null: all logs of the task; else the run shown below
  logOffset: 0, logComplete: false,
  expanded: new Set(),   // runs whose full error is shown
  pendingTrigger: null,  // {id, codops, task}: "Run now" was pressed, its run not started yet
  busy: false, timer: null,
};

// -- addresses ---------------------------------------------------------------------
export function link(params) {
  const parts = [];
  for (const key of ["org", "task", "run"]) if (params[key] !== undefined && params[key] !== null) parts.push(`${key}=${enc(params[key])}`);
  return parts.length ? `#${parts.join("&")}` : "#";
}

function readHash() {
  const found = {};
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [key, value] = part.split("=");
    if (key && value) found[key] = decodeURIComponent(value);
  }
  return found;
}

function replaceHash() {  // the run shown below changes the address without a history entry
  history.replaceState(null, "", link({ org: state.org, task: state.task, run: state.logRun }) || location.pathname);
}

const taskPath = () => `/api/organisations/${enc(state.org)}/tasks/${enc(state.task)}`;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// "STALE"/"FRESH" against the task's freshness (its title says the limit); "–" without one.
function freshness(task) {
  if (task.stale === null || task.stale === undefined) return "–";
  const node = badge(task.stale ? "STALE" : "FRESH");
  const since = task.last_success_at ? `last success ${utcText(task.last_success_at)}` : "no success yet";
  node.title = `freshness ${fmtDuration(task.freshness_s)}; ${since}`;
  return node;
}

// -- the header: organisations --------------------------------------------------------
async function loadOrganisations() {
  const orgs = await api("/api/organisations");
  $("org").replaceChildren(el("option", { value: "", text: "Overview: all organisations" }),
    ...orgs.map((o) => el("option", { value: o.codops, text: `${o.codops} (${o.tasks})` })));
  $("org").value = state.org && orgs.some((o) => o.codops === state.org) ? state.org : "";
  return orgs;
}

function crumbs() {
  const parts = [el("a", { href: "#", text: "Overview" })];
  if (state.org) parts.push(" › ", el("a", { href: link({ org: state.org }), text: state.org }));
  if (state.task) parts.push(" › ", el("span", { text: state.task }));
  $("crumbs").replaceChildren(...parts);
}

// -- views ------------------------------------------------------------------------------
function show(view) {
  $("overview-section").hidden = view !== "overview";
  $("tasks-section").hidden = view === "overview";
  $("task-section").hidden = view !== "task";
  $("logs-section").hidden = view !== "task";
  if (view !== "task") $("outputs-section").hidden = true;
  document.body.dataset.view = view;
  crumbs();
}

async function loadOverview() {
  const data = await api("/api/overview");
  renderOverview(data, link);
}

async function loadTasks() {
  const listing = await api(`/api/organisations/${enc(state.org)}/tasks`);
  $("tasks-count").textContent = `(${listing.tasks.length})`;
  $("tasks-org").textContent = state.org;
  $("no-tasks").hidden = listing.tasks.length > 0;
  $("problems").replaceChildren(...listing.problems.map((p) => el("li", { text: problemText(p) })));
  $("tasks").tBodies[0].replaceChildren(...listing.tasks.map((t) => {
    const row = el("tr", { "data-task": t.name, class: t.name === state.task ? "selected" : "",
                           onclick: () => { location.hash = link({ org: state.org, task: t.name }); } },
      el("td", { "data-label": "Task" }, el("a", { class: "task-name", href: link({ org: state.org, task: t.name }), text: t.name })),
      el("td", { "data-label": "Loop", text: t.loop }),
      el("td", { "data-label": "State" }, badge(t.state)),
      el("td", { "data-label": "Last status" }, badge(t.last_status)),
      el("td", { "data-label": "Started" }, when(t.last_started_at)),
      el("td", { class: "num", "data-label": "Duration", text: fmtDuration(t.last_duration_s) }),
      el("td", { "data-label": "Version" }, el("code", { text: t.version || "–" })),
      el("td", { class: "num", "data-label": "Successes", text: String(t.successes) }),
      el("td", { class: "num", "data-label": "Failures", text: String(t.failures) }),
      el("td", { class: "freshness", "data-label": "Freshness" }, freshness(t)));
    if (t.problems.length) row.title = t.problems.map((p) => p.message).join("\n");
    return row;
  }));
  state.taskRow = state.task ? listing.tasks.find((t) => t.name === state.task) || null : null;
  if (state.task && !state.taskRow) {
    setStatus(`no task '${state.task}' in organisation '${state.org}'`, true);
    state.task = null;
    show("org");
  }
}

// -- a task: details, executions, filters ------------------------------------------------------
function statusFilter() { return STATUS_FILTERS[$("filter-status").value] || []; }

function runsQuery(before) {
  const params = new URLSearchParams({ limit: String(RUNS_PAGE) });
  if (before) params.set("before", String(before));
  for (const status of statusFilter()) params.append("status", status);
  if ($("filter-version").value) params.set("version", $("filter-version").value);
  return `${taskPath()}/runs?${params}`;
}

async function loadRuns() {
  const page = await api(runsQuery(null));
  if (state.olderLoaded && state.runs.length) {
    // Keep the older pages the user asked for; replace only the newest page.
    const oldest = page.runs.length ? page.runs[page.runs.length - 1].id : Infinity;
    state.runs = page.runs.concat(state.runs.filter((r) => r.id < oldest));
  } else {
    state.runs = page.runs;
    state.nextBefore = page.next_before;
  }
  renderRuns();
}

async function loadOlder() {
  if (!state.nextBefore) return;
  const page = await api(runsQuery(state.nextBefore));
  state.runs = state.runs.concat(page.runs);
  state.nextBefore = page.next_before;
  state.olderLoaded = true;
  renderRuns();
}

function renderVersions() {
  if (state.taskRow && state.taskRow.version) state.versions.add(state.taskRow.version);
  for (const run of state.runs) if (run.version) state.versions.add(run.version);
  const select = $("filter-version");
  const chosen = select.value;
  const known = [...state.versions].sort();
  if (select.options.length - 1 === known.length) return;  // unchanged: keep the open list stable
  select.replaceChildren(el("option", { value: "", text: "all versions" }),
                         ...known.map((v) => el("option", { value: v, text: v })));
  select.value = chosen;
}

function errorCell(run) {
  const text = run.error || "";
  const open = state.expanded.has(run.id);
  const cell = el("td", { class: `error-cell${open ? " expanded" : ""}`, "data-label": "Error" },
    el("div", { class: "error-text", title: open ? null : text, "data-testid": `error-${run.id}`, text }));
  if (text.length > ERROR_CLAMP) {
    cell.append(el("button", { type: "button", class: "link-button", "data-testid": `error-toggle-${run.id}`,
      "aria-expanded": String(open), text: open ? "less" : "full error",
      onclick: (event) => {
        event.stopPropagation();
        if (state.expanded.has(run.id)) state.expanded.delete(run.id); else state.expanded.add(run.id);
        renderRuns();
      } }));
  }
  return cell;
}

// A retry (the task's `retries`) says which attempt it is and links to the first attempt,
// whose log it shows below like "show below" does.
function retryOf(run) {
  if (!run.retry_of) return null;
  return el("div", { class: "attempt", "data-testid": `attempt-${run.id}` },
    `attempt ${run.attempt || "?"}, retry of `,
    el("a", { href: link({ org: state.org, task: state.task, run: run.retry_of }),
              "data-testid": `retry-of-${run.id}`, title: `show the log of run ${run.retry_of} below`,
              text: `run #${run.retry_of}`,
              onclick: (event) => { event.preventDefault(); event.stopPropagation(); showRun(run.retry_of); } }));
}

function runCell(run) {
  return el("td", { class: "num", "data-label": "Run" }, String(run.id), retryOf(run));
}

function renderRuns() {
  renderVersions();
  const filtered = statusFilter().length || $("filter-version").value;
  $("older").hidden = !state.nextBefore;
  $("no-runs").hidden = state.runs.length > 0;
  $("no-runs").textContent = filtered ? "No execution matches these filters." : "No execution yet.";
  $("runs").tBodies[0].replaceChildren(...state.runs.map((r) => el("tr", {
    "data-run": r.id, class: r.id === state.logRun ? "selected" : "" },
    runCell(r),
    el("td", { "data-label": "Log" }, el("button", { type: "button", "data-testid": `show-below-${r.id}`,
      class: "show-below", text: r.id === state.logRun ? "shown below" : "show below", onclick: () => showRun(r.id) })),
    el("td", { "data-label": "Status" }, badge(r.status)),
    el("td", { "data-label": "Started" }, when(r.started_at)),
    el("td", { class: "num", "data-label": "Duration", text: fmtDuration(r.duration_s) }),
    el("td", { "data-label": "Version" }, el("code", { text: r.version || "–" })),
    el("td", { class: "num usage", "data-label": "Memory", "data-testid": `memory-${r.id}`, text: fmtMemory(r.peak_memory_bytes) }),
    el("td", { class: "num usage", "data-label": "CPU", "data-testid": `cpu-${r.id}`, text: fmtCpu(r.cpu_seconds) }),
    errorCell(r))));
  drawGraph($("graph"), state.runs, state.logRun, showRun);
}

// -- logs: all of the task's by default, or one run's ("show below") -------------------
async function loadLogs(reset) {
  if (state.logRun === null) {
    const logs = await api(`${taskPath()}/logs?runs=${ALL_LOGS_RUNS}`);
    $("logs-title").textContent = `Logs of the last ${plural(logs.runs.length, "execution")}`;
    $("show-all").hidden = true;
    setLog(logs.text || "no logs yet", true);
    state.logComplete = true;
    return;
  }
  if (reset) {
    state.logOffset = 0;
    state.logComplete = false;
    const piece = await api(`/api/runs/${state.logRun}/log?tail=${RUN_LOG_TAIL}`);
    const note = piece.offset > 0 ? `[the first ${piece.offset} bytes of this log are not shown]\n` : "";
    const shown = state.runs.find((r) => r.id === state.logRun);
    $("logs-title").textContent = `Log of run ${state.logRun}` + (shown && shown.retry_of
      ? ` (attempt ${shown.attempt}, retry of run ${shown.retry_of})` : "");
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

async function showRun(runId, scroll = true) {
  state.logRun = runId;
  replaceHash();
  renderRuns();
  await guarded(async () => { await loadLogs(true); await loadOutputs(() => state.logRun); });
  if (scroll) $("logs-section").scrollIntoView({ behavior: "smooth", block: "start" });
  schedule();
}

async function showAll() {
  state.logRun = null;
  replaceHash();
  renderRuns();
  await guarded(async () => { await loadLogs(true); await loadOutputs(() => state.logRun); });
}

// -- Run now: the trigger API, as 'peach-tasks trigger' -------------------------------------------
async function runNow() {
  const text = $("payload").value.trim();
  let payload = null;
  if (text) {
    try { payload = JSON.parse(text); } catch (err) {
      $("run-now-status").textContent = `The payload is not JSON (${err.message}); leave it empty for none.`;
      $("run-now-status").className = "error";
      return;
    }
  }
  $("run-now").disabled = true;
  try {
    const queued = await post(`${taskPath()}/trigger`, { payload });
    state.pendingTrigger = { id: queued.id, codops: state.org, task: state.task };
    $("run-now-status").textContent = `Queued (trigger ${queued.id}): it runs next in its loop; its log opens below.`;
    $("run-now-status").className = "ok";
  } catch (err) {
    $("run-now-status").textContent = err instanceof AuthNeeded ? "an access token is needed" : String(err.message || err);
    $("run-now-status").className = "error";
  } finally {
    $("run-now").disabled = false;
    schedule(LIVE_MS);
  }
}

// A queued trigger's run, once its loop has started it: shown below, its log followed.
async function followTrigger() {
  const wanted = state.pendingTrigger;
  if (!wanted || wanted.codops !== state.org || wanted.task !== state.task) return;
  const triggers = await api(`/api/organisations/${enc(wanted.codops)}/triggers`);
  const found = triggers.find((t) => t.id === wanted.id);
  if (!found) return;
  if (found.state === "DROPPED") {
    state.pendingTrigger = null;
    $("run-now-status").textContent = `Trigger ${found.id} was dropped: ${found.note || "its task is gone"}`;
    $("run-now-status").className = "error";
  } else if (found.run_id) {
    state.pendingTrigger = null;
    $("run-now-status").textContent = `Run ${found.run_id} started by trigger ${found.id}.`;
    await loadRuns();
    await showRun(found.run_id, false);
  }
}

// -- navigation and refreshing ----------------------------------------------------------------
async function route() {
  const wanted = readHash();
  const changedTask = wanted.org !== state.org || wanted.task !== state.task;
  state.org = wanted.org || null;
  state.task = state.org ? wanted.task || null : null;
  if (changedTask) {
    state.runs = []; state.olderLoaded = false; state.nextBefore = null; state.versions = new Set();
    state.expanded = new Set(); state.taskRow = null;
    $("filter-status").value = ""; $("filter-version").replaceChildren(el("option", { value: "", text: "all versions" }));
    $("log").textContent = "";
    $("run-now-status").textContent = "";
  }
  state.logRun = state.task && wanted.run ? Number(wanted.run) : null;
  show(state.task ? "task" : (state.org ? "org" : "overview"));
  await guarded(async () => {
    await loadOrganisations();
    await loadView(true);
  });
  if (state.logRun !== null && changedTask) $("logs-section").scrollIntoView({ block: "start" });
  schedule();
}

async function loadView(reset) {
  if (!state.org) return loadOverview();
  await loadTasks();
  if (!state.task) return;
  $("task-title").textContent = `${state.org}/${state.task}`;
  renderDetails(state.taskRow);
  await loadRuns();
  await loadLogs(reset);
  await loadOutputs(() => state.logRun);  // what the run shown below displayed (kept when it ends)
  await followTrigger();
}

async function guarded(work) {
  try {
    await work();
    const now = new Date().toLocaleTimeString();
    setStatus(`updated ${now} · refreshes every ${REFRESH_MS / 1000} s`);
    return true;
  } catch (err) {
    setStatus(err instanceof AuthNeeded ? "an access token is needed" : String(err.message || err), true);
    return false;
  }
}

async function refresh() {
  if (state.busy || document.hidden) return schedule();
  state.busy = true;
  try {
    await guarded(async () => { await loadOrganisations(); await loadView(false); });
  } finally {
    state.busy = false;
    schedule();
  }
}

// Every 5 s; every second while a triggered run is awaited or the log shown still grows.
function schedule(delay) {
  clearTimeout(state.timer);
  const live = state.pendingTrigger || (state.task && state.logRun !== null && !state.logComplete);
  state.timer = setTimeout(refresh, delay || (live ? LIVE_MS : REFRESH_MS));
}

function start() {
  $("org").addEventListener("change", (event) => { location.hash = link({ org: event.target.value || null }); });
  $("older").addEventListener("click", () => guarded(loadOlder));
  $("show-all").addEventListener("click", showAll);
  $("run-now").addEventListener("click", runNow);
  for (const id of ["filter-status", "filter-version"]) {
    $(id).addEventListener("change", () => { state.olderLoaded = false; guarded(loadRuns); });
  }
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    session.token = $("token").value.trim();
    sessionStorage.setItem("peach-token", session.token);
    if (await guarded(async () => { await loadOrganisations(); await loadView(true); })) $("token-form").hidden = true;
  });
  window.addEventListener("hashchange", route);
  route();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
