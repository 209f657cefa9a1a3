// The duration graph: one mark per finished execution, placed at its start time.
// A blue dot is a success, a red cross a failure or timeout, a grey ring an abandoned run.
"use strict";

import { fmtDuration, tickText, timeTicks, utcText } from "./format.js";

const LEFT = 58, RIGHT = 16, TOP = 14, BOTTOM = 40;

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Drawn at the size it is shown (so its text stays readable on a phone), between 320 and 760 px.
export function drawGraph(graph, runs, selected, onPick) {
  const W = Math.round(Math.min(760, Math.max(320, graph.clientWidth || 640)));
  const H = W < 500 ? 200 : 240;
  graph.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const points = runs.filter((r) => r.duration_s !== null && r.status !== "RUNNING").slice().reverse();
  const max = Math.max(...points.map((r) => r.duration_s), 0.001) * 1.1;
  const times = points.map((r) => Date.parse(r.started_at));
  const first = Math.min(...times), last = Math.max(...times);
  // A lone run (or runs at one instant) sits in the middle of an hour-wide axis.
  const [start, end] = last - first < 1000 ? [first - 30 * 60e3, last + 30 * 60e3] : [first, last];
  const x = (t) => LEFT + (W - LEFT - RIGHT) * (t - start) / (end - start);
  const y = (d) => TOP + (H - TOP - BOTTOM) * (1 - d / max);
  const nodes = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    nodes.push(svg("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: y(value), y2: y(value) }),
               svg("text", { x: LEFT - 6, y: y(value) + 4, "text-anchor": "end" }, fmtDuration(value)));
  }
  nodes.push(svg("line", { class: "axis", x1: LEFT, x2: LEFT, y1: TOP, y2: H - BOTTOM }),
             svg("line", { class: "axis", x1: LEFT, x2: W - RIGHT, y1: H - BOTTOM, y2: H - BOTTOM }));
  if (!points.length) {
    nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no finished executions yet"));
    graph.replaceChildren(...nodes);
    return;
  }
  // The time axis: ticks at round local times, labelled so that they never overlap.
  const labelled = Math.max(2, Math.floor((W - LEFT - RIGHT) / 120));  // labels ~120 px apart at least
  for (const tick of timeTicks(start, end, labelled)) {
    const at = x(tick);
    if (at < LEFT + 20 || at > W - RIGHT - 20) continue;  // a label cut by the edge reads as another time
    nodes.push(svg("line", { class: "tick", x1: at, x2: at, y1: H - BOTTOM, y2: H - BOTTOM + 5 }),
               svg("text", { class: "tick-label", x: at, y: H - BOTTOM + 18, "text-anchor": "middle" },
                   tickText(tick, end - start)));
  }
  nodes.push(svg("text", { class: "axis-title", x: W - RIGHT, y: H - 4, "text-anchor": "end" }, "start time (local)"));
  nodes.push(svg("polyline", { class: "trend",
                               points: points.map((r, i) => `${x(times[i])},${y(r.duration_s)}`).join(" ") }));
  points.forEach((r, i) => nodes.push(marker(r, x(times[i]), y(r.duration_s), r.id === selected, onPick)));
  graph.replaceChildren(...nodes);
}

function marker(run, cx, cy, isSelected, onPick) {
  const title = svg("title", {}, `run ${run.id} · ${run.status} · ${fmtDuration(run.duration_s)} · ${utcText(run.started_at)}`);
  const selected = isSelected ? " selected" : "";
  const common = { "data-run": run.id, onclick: () => onPick(run.id) };
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
