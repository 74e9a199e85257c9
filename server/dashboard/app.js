// iworkflow dashboard: workflow list with live counts, and a workflow's DAG (SVG), refreshed every 2 s.
"use strict";

const REFRESH_MS = 2000;
const STATUSES = ["finished", "running", "retrying", "queued", "failed", "cancelled"];
const COLORS = {
  queued: "#9ca3af", running: "#3b82f6", retrying: "#f59e0b", finished: "#16a34a",
  failed: "#dc2626", subfinished: "#ea580c", cancelled: "#6b7280", unknown: "#94a3b8",
};
const SVGNS = "http://www.w3.org/2000/svg";
const state = { selected: null, openLogs: new Set(), logs: new Map(), timer: null };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(path) {
  const headers = {};
  const token = localStorage.getItem("iworkflow-token");
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch("/api" + path, { headers, cache: "no-store" });
  if (res.status === 401) { $("auth").hidden = false; throw new Error("this server needs a token to read"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* body was not JSON */ }
    throw new Error(detail);
  }
  return res.json();
}

function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "-"; }
function fmtClock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "-"; }
function fmtDur(a, b) {
  if (!a) return "-";
  const s = Math.max(0, (b || Date.now() / 1000) - a);
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
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

// --- list view ----------------------------------------------------------------------------------
async function renderList() {
  const workflows = await api("/workflows?limit=200");
  const body = $("workflows").querySelector("tbody");
  body.replaceChildren(...workflows.map(wf => el("tr", {
      class: "clickable", "data-id": wf.id, onclick: () => { location.hash = "#/workflow/" + wf.id; } },
    el("td", { text: wf.name || "(unnamed)" }),
    el("td", { class: "mono", text: short(wf.id) }),
    el("td", {}, badge(wf.status)),
    el("td", { text: String(wf.n_works) }),
    el("td", {}, el("div", { class: "counts", text: countsText(wf.counts) }), countsBar(wf.counts)),
    el("td", { text: fmtTime(wf.submitted_at) }),
    el("td", { text: fmtDur(wf.submitted_at, wf.finished_at) }),
  )));
  $("empty").hidden = workflows.length > 0;
  $("crumbs").replaceChildren();
}

// --- DAG layout ---------------------------------------------------------------------------------
function layout(dag) {
  const ids = dag.nodes.map(n => n.id);
  const parents = new Map(ids.map(id => [id, []]));
  for (const e of dag.edges) if (parents.has(e.target)) parents.get(e.target).push(e.source);
  const level = new Map();
  const depth = (id, seen) => {
    if (level.has(id)) return level.get(id);
    if (seen.has(id)) return 1;
    seen.add(id);
    const ps = parents.get(id) || [];
    const d = ps.length ? 1 + Math.max(...ps.map(p => depth(p, seen))) : 1;
    level.set(id, d);
    return d;
  };
  ids.forEach(id => depth(id, new Set()));
  const columns = new Map();
  for (const n of dag.nodes) {
    const l = level.get(n.id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(n);
  }
  return { parents, level, columns };
}

const NW = 180, NH = 58, GX = 46, GY = 20, PAD = 16;

function nodeBox(g, x, y, title, subtitle, status) {
  g.append(el("svg:rect", { x, y, width: NW, height: NH, rx: 8, fill: COLORS[status] || COLORS.unknown }));
  const t = el("svg:text", { x: x + 10, y: y + 22, class: "title" });
  t.textContent = title.length > 22 ? title.slice(0, 21) + "…" : title;
  const s = el("svg:text", { x: x + 10, y: y + 42 });
  s.textContent = subtitle;
  g.append(t, s);
}

function renderDag(dag) {
  const svg = $("dag");
  const { parents, columns } = layout(dag);
  const pos = new Map();
  let maxRows = 1;
  const levels = [...columns.keys()].sort((a, b) => a - b);
  for (const l of levels) {
    const col = columns.get(l);
    maxRows = Math.max(maxRows, col.length);
    col.forEach((n, i) => pos.set(n.id, { x: PAD + l * (NW + GX), y: PAD + i * (NH + GY) }));
  }
  const root = { x: PAD, y: PAD + ((maxRows - 1) * (NH + GY)) / 2 };
  const width = PAD * 2 + (levels.length ? levels[levels.length - 1] + 1 : 1) * (NW + GX);
  const height = PAD * 2 + maxRows * (NH + GY);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const edges = el("svg:g", {});
  const curve = (a, b) => {
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    return `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
  };
  for (const n of dag.nodes) {
    const ps = parents.get(n.id);
    if (!ps.length) edges.append(el("svg:path", { class: "edge root", d: curve(root, pos.get(n.id)), "marker-end": "url(#arrow)" }));
    for (const p of ps) if (pos.has(p)) edges.append(el("svg:path", { class: "edge", d: curve(pos.get(p), pos.get(n.id)), "marker-end": "url(#arrow)" }));
  }
  const defs = el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" })));
  const wf = dag.workflow;
  const rootG = el("svg:g", { class: "node workflow-node" + (state.selected === null ? " selected" : ""),
    "data-status": wf.status, "data-id": wf.id });
  nodeBox(rootG, root.x, root.y, wf.name || short(wf.id), `workflow · ${wf.status}`, wf.status);
  rootG.addEventListener("click", () => { state.selected = null; refresh(); });
  const nodes = dag.nodes.map(n => {
    const p = pos.get(n.id);
    const g = el("svg:g", { class: "node work-node" + (state.selected === n.id ? " selected" : ""),
      "data-status": n.status, "data-id": n.id, "data-name": n.name });
    const c = n.counts;
    nodeBox(g, p.x, p.y, n.name || short(n.id), `${c.finished}/${c.total} ok` + (c.failed ? ` · ${c.failed} failed` : "")
      + (c.running ? ` · ${c.running} running` : ""), n.status);
    g.append(el("svg:title", { text: `${n.name} (${n.status}) ${countsText(c)}` }));
    g.addEventListener("click", () => { state.selected = n.id; refresh(); });
    return g;
  });
  svg.replaceChildren(defs, edges, rootG, ...nodes);
}

// --- side panel ---------------------------------------------------------------------------------
function workflowPanel(dag) {
  const wf = dag.workflow;
  return [
    el("h2", { text: wf.name || wf.id }),
    el("p", {}, badge(wf.status), " ", el("span", { class: "counts", text: countsText(wf.counts) })),
    el("p", { class: "mono", text: "id " + wf.id }),
    el("p", { text: `submitted ${fmtTime(wf.submitted_at)} · duration ${fmtDur(wf.submitted_at, wf.finished_at)}` }),
    wf.error ? el("p", { class: "error-text", text: wf.error }) : null,
    el("p", { class: "hint", text: "Click a work node for its jobs." }),
  ];
}

function jobRows(job) {
  const rows = [el("tr", { class: "job", "data-status": job.status, "data-key": job.job_key },
    el("td", { class: "mono", title: job.job_key, text: short(job.job_key) }),
    el("td", { class: "mono", text: job.args || "" }),
    el("td", {}, badge(job.status)),
    el("td", { text: String(job.attempt) }),
    el("td", { class: "mono", text: job.worker || "-" }),
    el("td", { text: fmtClock(job.started_at) }),
    el("td", { text: job.started_at ? fmtDur(job.started_at, job.finished_at) : "-" }),
  )];
  if (job.error) {
    const cell = el("td", { colspan: 7 }, el("div", { class: "error-text job-error", text: job.error }));
    const open = state.openLogs.has(job.id);
    cell.append(el("button", { class: "joblog-btn", onclick: () => {
      if (state.openLogs.has(job.id)) state.openLogs.delete(job.id); else state.openLogs.add(job.id);
      refresh();
    }, text: open ? "hide log" : "show traceback and log" }));
    if (open) {
      const pre = el("pre", { class: "job-log", text: state.logs.get(job.id) || "loading…" });
      cell.append(pre);
      api(`/jobs/${job.id}/log`).then(log => { state.logs.set(job.id, log.text); pre.textContent = log.text; })
        .catch(e => { pre.textContent = e.message; });
    }
    rows.push(el("tr", { class: "job-error-row" }, cell));
  }
  return rows;
}

function workPanel(node) {
  const c = node.counts;
  return [
    el("h2", { text: node.name || node.id }),
    el("p", {}, badge(node.status), " ", el("span", { class: "counts", text: countsText(c) })),
    countsBar(c),
    el("p", { class: "mono", text: `work ${node.id}` }),
    el("p", { text: `executor ${node.executor || "-"} · queue ${node.queue || "-"} · submitted ${fmtTime(node.submitted_at)}`
      + ` · duration ${fmtDur(node.submitted_at, node.finished_at)}` }),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ...["Key", "Args", "Status", "Attempt", "Worker", "Started", "Took"].map(h => el("th", { text: h })))),
      el("tbody", {}, ...node.jobs.flatMap(jobRows))),
  ];
}

async function renderWorkflow(id) {
  const dag = await api(`/workflows/${encodeURIComponent(id)}/dag`);
  const wf = dag.workflow;
  $("crumbs").replaceChildren(el("a", { href: "#/", text: "workflows" }), " / ", wf.name || short(wf.id));
  $("wf-head").replaceChildren(el("h1", { text: wf.name || wf.id }), badge(wf.status),
    el("div", { class: "counts", text: `${dag.nodes.length} works · ${countsText(wf.counts)}` }), countsBar(wf.counts));
  if (state.selected && !dag.nodes.some(n => n.id === state.selected)) state.selected = null;
  renderDag(dag);
  const node = dag.nodes.find(n => n.id === state.selected);
  const scroll = $("panel").scrollTop;
  $("panel").replaceChildren(...(node ? workPanel(node) : workflowPanel(dag)).filter(Boolean));
  $("panel").scrollTop = scroll;
}

// --- routing and refresh ------------------------------------------------------------------------
function parseRoute() {
  const a = location.hash.match(/^#\/artifacts(?:\/([^/]+))?/);
  if (a) return { view: "artifacts", name: a[1] ? decodeURIComponent(a[1]) : null };
  const m = location.hash.match(/^#\/workflow\/([^/]+)(?:\/work\/([^/]+))?/);
  return m ? { view: "workflow", id: decodeURIComponent(m[1]), work: m[2] ? decodeURIComponent(m[2]) : null }
    : { view: "list" };
}

async function refresh() {
  const route = parseRoute();
  $("list-view").hidden = route.view !== "list";
  $("workflow-view").hidden = route.view !== "workflow";
  $("artifacts-view").hidden = route.view !== "artifacts";
  try {
    if (route.view === "list") await renderList();
    else if (route.view === "artifacts") await renderArtifacts(route.name);
    else await renderWorkflow(route.id);
    $("error").hidden = true;
    $("refresh").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = e.message;
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
}

window.addEventListener("hashchange", () => { state.selected = parseRoute().work || null; state.openLogs.clear(); refresh(); });
$("auth-form").addEventListener("submit", ev => {
  ev.preventDefault();
  localStorage.setItem("iworkflow-token", $("auth-token").value);
  $("auth").hidden = true;
  refresh();
});
state.selected = parseRoute().work || null;
refresh().then(schedule);
