// Building the page's elements, and talking to the JSON API (with the token, if any).
"use strict";

import { localText, utcText } from "./format.js";

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function badge(value) {
  return value ? el("span", { class: `badge ${value}`, text: value }) : "–";
}

// A time as people read it (local, and how long ago), the exact UTC time on hover.
export function when(iso) {
  return el("time", { datetime: iso || "", title: utcText(iso), text: localText(iso) });
}

export class AuthNeeded extends Error {}

export const session = { token: sessionStorage.getItem("peach-token") || "" };

function headers(extra = {}) {
  return session.token ? { ...extra, Authorization: `Bearer ${session.token}` } : extra;
}

async function answer(response) {
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token-error").textContent = session.token ? "that token was refused" : "";
    throw new AuthNeeded("a token is needed");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (err) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response.json();
}

export async function api(path) {
  let response;
  try {
    response = await fetch(path, { headers: headers(), cache: "no-store" });
  } catch (err) {
    throw new Error("cannot reach the peach-tasks server");
  }
  return answer(response);
}

// The API's one write (a trigger): JSON from this page, which the server checks is its own.
export async function post(path, body) {
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                   body: JSON.stringify(body), cache: "no-store" });
  } catch (err) {
    throw new Error("cannot reach the peach-tasks server");
  }
  return answer(response);
}

export const enc = encodeURIComponent;

export function problemText(p) {
  const where = p.file ? (p.line ? `${p.file}:${p.line}` : p.file) : null;
  return `${p.kind} · ${p.scope}${where ? ` · ${where}` : ""}: ${p.message}`;
}
