// The home page: every organisation the viewer may see, failing tasks first.
"use strict";

import { $, el, badge, when, problemText } from "./dom.js";
import { plural } from "./format.js";

// `link(params)` makes the address of a view (see dashboard.js).
export function renderOverview(data, link) {
  const orgs = data.organisations;
  $("empty").hidden = orgs.length > 0;
  $("overview-body").hidden = orgs.length === 0;
  $("overview-problems").replaceChildren(...data.problems.map((p) => el("li", { text: problemText(p) })));
  $("overview-problems-title").hidden = data.problems.length === 0;
  $("overview-problems-title").textContent = `${plural(data.problems.length, "problem")} found by sync`;

  $("failing").replaceChildren(...data.failing.map((f) => el("li", { class: "failing-item", "data-task": `${f.codops}/${f.task}` },
    el("div", { class: "failing-head" },
      el("a", { class: "task-link", href: link({ org: f.codops, task: f.task }), text: `${f.codops}/${f.task}` }),
      badge(f.status),
      f.running ? badge("RUNNING") : null,
      el("span", { class: "muted" }, "run ", String(f.run_id), " · ", when(f.started_at))),
    f.error ? el("div", { class: "failing-error", title: f.error, text: f.error }) : null,
    el("a", { class: "button", "data-testid": `failing-log-${f.codops}-${f.task}`,
              href: link({ org: f.codops, task: f.task, run: f.run_id }), text: "Read the log of that run" }))));
  const more = data.failing_total - data.failing.length;
  $("failing-title").textContent = data.failing_total
    ? `${plural(data.failing_total, "failing task")}${more > 0 ? ` (the newest ${data.failing.length} below; each organisation lists the others)` : ""}`
    : "No failing task";
  $("failing-title").classList.toggle("good", data.failing_total === 0);

  $("org-cards").replaceChildren(...orgs.map((o) => {
    const counts = [["failing", o.failing], ["stale", o.stale], ["running", o.running], ["healthy", o.healthy],
                    ["waiting", o.waiting]].filter(([name, n]) => n !== null && (n > 0 || name !== "waiting"));
    return el("a", { class: `card${o.failing ? " has-failing" : ""}`, href: link({ org: o.codops }),
                     "data-testid": `org-card-${o.codops}` },
      el("span", { class: "card-title" }, el("strong", { text: o.codops }),
         el("span", { class: "muted", text: ` ${plural(o.tasks, "task")}` })),
      el("span", { class: "counts" }, ...counts.map(([name, n]) =>
        el("span", { class: `count ${name}${n ? "" : " zero"}`, "data-count": name, title: `${n} ${name}` },
           el("b", { text: String(n) }), ` ${name}`))));
  }));
}
