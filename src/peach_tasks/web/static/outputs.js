// peach-tasks dashboard: the outputs of the run shown below (what its task displayed).
// An output is the task's content, never trusted: images go into <img> (a script in an SVG
// shown as an image never runs), HTML into an <iframe sandbox> without scripts and without this
// page's origin, behind a policy that loads nothing from anywhere; text is set as text.
"use strict";

import { $, el, api, session } from "./dom.js";

const OUTPUT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";
const OUTPUT_STYLE = "body{font:13px system-ui,sans-serif;margin:6px;color:#1d2433}"
  + "table{border-collapse:collapse}th,td{border:1px solid #e4e7ec;padding:2px 8px;text-align:right}"
  + "thead th{background:#f7f8fa}";
const outputs = { key: null, urls: [], queue: Promise.resolve() };

// The output's bytes as a Blob, with the caller's token (an <img src> could not send it).
async function outputBlob(url) {
  const headers = session.token ? { Authorization: `Bearer ${session.token}` } : {};
  const response = await fetch(url, { headers, cache: "no-store" });
  if (!response.ok) throw new Error(`${response.status}: cannot read ${url}`);
  return response.blob();
}

// The document a sandboxed frame shows: the task's HTML after a policy that forbids every load.
function sandboxedDocument(html) {
  return `<!doctype html><html><head><meta charset="utf-8">`
    + `<meta http-equiv="Content-Security-Policy" content="${OUTPUT_POLICY}">`
    + `<style>${OUTPUT_STYLE}</style></head><body>${html}</body></html>`;
}

async function outputNode(output, urls) {
  const label = `output ${output.seq} · ${output.kind} · ${output.mime_type}`;
  const box = el("figure", { class: `output ${output.kind}`, "data-testid": `output-${output.seq}`,
                             "data-mime": output.mime_type });
  const blob = await outputBlob(output.url);
  if (output.mime_type.startsWith("image/")) {
    const url = URL.createObjectURL(blob);
    urls.push(url);
    box.append(el("img", { src: url, alt: output.text || label }));
  } else if (output.mime_type === "text/html") {
    const frame = el("iframe", { sandbox: "", referrerpolicy: "no-referrer", title: label, loading: "lazy" });
    frame.srcdoc = sandboxedDocument(await blob.text());
    box.append(frame);
  } else {
    box.append(el("pre", { class: "output-text", text: await blob.text() }));
  }
  box.append(el("figcaption", { text: label }));
  return box;
}

// Called whenever the run shown below changes or the page refreshes: draws again only when
// the run's outputs changed (they are stored when it ends). `shown()` is the run shown below
// now (null: none), asked again after each await: another run may be picked meanwhile.
export function loadOutputs(shown) {
  // One at a time: a refresh and a click must not draw the same frames twice over each other.
  outputs.queue = outputs.queue.catch(() => {}).then(() => drawOutputs(shown));
  return outputs.queue;
}

async function drawOutputs(shown) {
  const section = $("outputs-section");
  if (shown() === null) {
    section.hidden = true;
    outputs.key = null;
    return;
  }
  const runId = shown();
  const listing = await api(`/api/runs/${runId}/outputs`);
  const key = `${runId}:${listing.status}:${listing.outputs.length}`;
  if (key === outputs.key || runId !== shown()) return;
  const nodes = [], urls = [];
  for (const output of listing.outputs) nodes.push(await outputNode(output, urls));
  if (runId !== shown()) {  // another run was picked meanwhile
    urls.forEach((url) => URL.revokeObjectURL(url));
    return;
  }
  outputs.urls.forEach((url) => URL.revokeObjectURL(url));  // the images drawn before
  outputs.urls = urls;
  outputs.key = key;
  $("outputs-title").textContent = `Outputs of run ${runId}`;
  $("no-outputs").hidden = listing.outputs.length > 0;
  $("no-outputs").textContent = listing.status === "RUNNING"
    ? "This run is still going: what it shows is kept when it ends." : "This run showed nothing.";
  $("outputs").replaceChildren(...nodes);
  section.hidden = false;
}
