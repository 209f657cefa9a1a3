// How the dashboard writes times, durations and sizes. Pure functions, no DOM state.
"use strict";

const MINUTE = 60e3, HOUR = 60 * MINUTE, DAY = 24 * HOUR;

export function parseTime(iso) {
  return iso ? new Date(iso) : null;
}

// "2026-11-30 05:12:03 UTC": the exact time, shown on hover.
export function utcText(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "").replace(/Z$/, "") + " UTC" : "";
}

// "3 min ago", "in 5 s" (a clock a little ahead), "2 d ago".
export function relative(date, now = new Date()) {
  const ms = now - date;
  const ahead = ms < 0;
  const span = Math.abs(ms);
  let text;
  if (span < 45e3) text = `${Math.max(1, Math.round(span / 1e3))} s`;
  else if (span < HOUR) text = `${Math.round(span / MINUTE)} min`;
  else if (span < DAY) text = `${Math.round(span / HOUR)} h`;
  else text = `${Math.round(span / DAY)} d`;
  return ahead ? `in ${text}` : `${text} ago`;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dayClock = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
// The axis is short on room: 24-hour clock there.
const dayOnly = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayHour = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

// Local time, and how long ago: "14:02:11 · 3 min ago" today, "28 Nov, 14:02 · 2 d ago" before.
export function localText(iso, now = new Date()) {
  const date = parseTime(iso);
  if (!date) return "–";
  const local = sameDay(date, now) ? clock.format(date) : dayClock.format(date);
  return `${local} · ${relative(date, now)}`;
}

// A label for a tick of the graph's time axis: the hour for short spans, the day for long ones.
export function tickText(ms, spanMs) {
  const date = new Date(ms);
  if (spanMs >= 2 * DAY) return dayOnly.format(date);
  if (spanMs >= DAY / 2) return dayHour.format(date);
  return hourMinute.format(date);
}

// Tick positions every "nice" step, at most about `count` of them.
const STEPS = [1e3, 5e3, 15e3, 30e3, MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR,
               12 * HOUR, DAY, 2 * DAY, 7 * DAY, 30 * DAY];
export function timeTicks(startMs, endMs, count = 5) {
  const span = Math.max(endMs - startMs, 1);
  const step = STEPS.find((s) => span / s <= count) || STEPS[STEPS.length - 1];
  // Steps of a day or more start at local midnight; shorter ones at a multiple of the step.
  const offset = step >= DAY ? new Date(startMs).getTimezoneOffset() * MINUTE : 0;
  const ticks = [];
  for (let t = Math.ceil((startMs - offset) / step) * step + offset; t <= endMs; t += step) ticks.push(t);
  return ticks;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(2)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// A run's usage: blank when it was not measured (no cgroup), so "0" is never made up.
export function fmtMemory(bytes) {
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

export function fmtCpu(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return `${seconds < 100 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}

export function plural(count, word) {
  return `${count} ${count === 1 ? word : word + "s"}`;
}
