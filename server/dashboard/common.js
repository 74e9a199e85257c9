// Shared by every page of the dashboard: DOM building, the API client (token included), formatting.
"use strict";

const STATUSES = ["finished", "running", "retrying", "queued", "failed", "cancelled"];
const JOB_TERMINAL = new Set(["finished", "failed", "cancelled"]);
const COLORS = {
  queued: "#9ca3af", running: "#3b82f6", retrying: "#f59e0b", finished: "#16a34a",
  failed: "#dc2626", subfinished: "#ea580c", cancelled: "#6b7280", unknown: "#94a3b8",
};
const SVGNS = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "iworkflow-token";

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "onchange") node.addEventListener("change", v);
    else if (k === "oninput") node.addEventListener("input", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// replaceChildren that skips null/false children (DOM's own would insert the text "null")
function fill(node, ...children) {
  node.replaceChildren(...children.filter(c => c !== null && c !== undefined && c !== false));
  return node;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function apiFetch(path, options) {
  const res = await fetch("/api" + path, { cache: "no-store", ...options, headers: { ...authHeaders(), ...((options || {}).headers || {}) } });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* body was not JSON */ }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    if (res.status === 401) showTokenForm(detail);
    throw new ApiError(res.status, detail);
  }
  return res;
}

async function api(path) { return (await apiFetch(path)).json(); }

// A page of a list endpoint and the number of matches in all (X-Total-Count).
async function apiPage(path) {
  const res = await apiFetch(path);
  return { items: await res.json(), total: Number(res.headers.get("X-Total-Count") || 0) };
}

// A write (cancel, retry): POST with the token; a 401/403 opens the token form with the server's reason.
async function apiPost(path) {
  try {
    return await (await apiFetch(path, { method: "POST" })).json();
  } catch (e) {
    if (e.status === 403) showTokenForm(e.message);
    throw e;
  }
}

function showTokenForm(reason) {
  $("auth").hidden = false;
  $("auth-reason").textContent = reason || "";
  $("auth-token").focus();
}

function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "-"; }
function fmtClock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "-"; }
function fmtSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtDur(a, b) { return a ? fmtSeconds(Math.max(0, (b || Date.now() / 1000) - a)) : "-"; }
function fmtAge(ts) { return ts ? fmtSeconds(Math.max(0, Date.now() / 1000 - ts)) + " ago" : "-"; }
function badge(status) { return el("span", { class: "badge " + status, "data-status": status, text: status }); }
function short(id) { return (id || "").slice(0, 8); }

function countsBar(c) {
  const bar = el("div", { class: "bar", title: STATUSES.map(s => `${s}: ${c[s]}`).join(", ") });
  for (const s of STATUSES) {
    if (c[s] > 0 && c.total > 0) bar.append(el("span", { style: `width:${100 * c[s] / c.total}%;background:${COLORS[s]}` }));
  }
  return bar;
}
function countsText(c) {
  const parts = STATUSES.filter(s => c[s] > 0).map(s => `${c[s]} ${s}`);
  return `${c.total} job${c.total === 1 ? "" : "s"}` + (parts.length ? ": " + parts.join(", ") : "");
}

// Works that share a name get "name #1", "name #2", ... in submission order, so every label is distinct.
function workLabels(works) {
  const byName = new Map();
  for (const w of works) byName.set(w.name, (byName.get(w.name) || 0) + 1);
  const seen = new Map();
  const labels = new Map();
  for (const w of works) {
    const name = w.name || short(w.id);
    if (byName.get(w.name) > 1) {
      const n = (seen.get(w.name) || 0) + 1;
      seen.set(w.name, n);
      labels.set(w.id, `${name} #${n}`);
    } else labels.set(w.id, name);
  }
  return labels;
}

function jobLink(job, text) {
  return el("a", { href: `#/job/${job.id}`, class: "mono", title: job.job_key, text: text || short(job.job_key) });
}
