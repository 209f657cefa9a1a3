// A task's details: what runs, how, where it is defined and in which environment.
"use strict";

import { $, el, problemText } from "./dom.js";
import { fmtDuration } from "./format.js";

// The problems that concern this task: at its definition, or naming it.
function ownProblems(task) {
  const name = `'${task.codops}/${task.name}'`;
  return task.problems.filter((p) => (p.file && task.defined_at === (p.line ? `${p.file}:${p.line}` : p.file))
                                     || p.message.includes(name));
}

// A task's environment: the organisation's uv environment of that name (its py_env, else
// "base"), and the dependencies its own definition adds.
function environment(task) {
  const name = task.environment ? `${task.codops}/${task.environment}` : `${task.codops}'s`;
  const added = task.dependencies && task.dependencies.length ? `, adds ${task.dependencies.join(", ")}` : "";
  return `${name} (uv)${added}`;
}

// A limit in round units: "1 h", "5 min", "90 s".
function span(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return seconds < 60 ? `${seconds} s` : fmtDuration(seconds);
}

function timeout(task) {
  const limit = task.run_limit_s, declared = task.timeout_s;
  if (limit === null || limit === undefined) return declared ? span(declared) : "the loop's limit";
  if (!declared) return `${span(limit)} (the loop's limit)`;
  if (declared > limit) return `${span(limit)} (the loop's limit; its definition asks ${span(declared)})`;
  return `${span(limit)} (its definition's)`;
}

export function renderDetails(task) {
  const box = $("task-details");
  if (!task) { box.replaceChildren(); return; }
  const method = task.full_notebook ? "the whole notebook, every code cell in order"
    : (task.method ? `${task.method}()` : "–");
  const rows = [
    ["Notebook", el("code", { text: task.notebook })],
    ["Method", el("code", { text: method })],
    ["Executor", task.executor],
    ["Loop", task.loop],
    ["Timeout", timeout(task)],
    ["Defined in", el("code", { text: `${task.repo}: ${task.defined_at || "?"}` })],
    ["Environment", environment(task)],
  ];
  const nodes = [];
  for (const [label, value] of rows) {
    nodes.push(el("dt", { text: label }), el("dd", { "data-detail": label.toLowerCase() }, value));
  }
  const problems = ownProblems(task);
  if (problems.length) {
    nodes.push(el("dt", { class: "error", text: "Problems" }),
               el("dd", { class: "error", "data-detail": "problems" },
                  ...problems.map((p) => el("div", { text: problemText(p) }))));
  }
  box.replaceChildren(...nodes);
}
