// A workflow's DAG as SVG: layered layout, zoom (wheel, buttons) and pan (drag), per-work job dots that
// expand and collapse, distinct labels for repeated names, and nested workflows as nodes that link to them.
"use strict";

const NW = 190, NH = 58, GX = 50, GY = 18, PAD = 16, DOT = 10, DOT_GAP = 2, MAX_DOTS = 390;
const DOTS_PER_ROW = Math.floor((NW - 16 + DOT_GAP) / (DOT + DOT_GAP));

function dotRows(n) { return Math.ceil(Math.min(n, MAX_DOTS) / DOTS_PER_ROW); }

function nodeHeight(node, expanded) {
  if (!expanded || node.kind !== "work") return NH;
  return NH + dotRows(node.jobs.length) * (DOT + DOT_GAP) + (node.counts.total > node.jobs.length ? 16 : 4);
}

// Levels by longest path from a root; sub-workflows sit one level after the last work submitted before them.
function dagLevels(dag) {
  const parents = new Map(dag.nodes.map(n => [n.id, []]));
  for (const e of dag.edges) if (parents.has(e.target) && parents.has(e.source)) parents.get(e.target).push(e.source);
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
  dag.nodes.forEach(n => depth(n.id, new Set()));
  for (const c of dag.children) {
    const before = dag.nodes.filter(n => n.submitted_at !== null && c.submitted_at !== null && n.submitted_at <= c.submitted_at);
    level.set(c.id, before.length ? 1 + Math.max(...before.map(n => level.get(n.id))) : 1);
  }
  return { parents, level };
}

function dagLayout(dag, expanded) {
  const { parents, level } = dagLevels(dag);
  const items = dag.nodes.map(n => ({ ...n, kind: "work" }))
    .concat([...dag.children].sort((a, b) => (a.submitted_at || 0) - (b.submitted_at || 0)).map(c => ({ ...c, kind: "workflow" })));
  const columns = new Map();
  for (const it of items) {
    const l = level.get(it.id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(it);
  }
  const levels = [...columns.keys()].sort((a, b) => a - b);
  const pos = new Map();
  let height = 0;
  for (const l of levels) {
    const col = columns.get(l);
    // order a column by where its parents sit (fewer crossings), keeping submission order among equals
    const key = it => {
      const ps = (parents.get(it.id) || []).filter(p => pos.has(p));
      return ps.length ? ps.reduce((s, p) => s + pos.get(p).y, 0) / ps.length : Infinity;
    };
    col.forEach((it, i) => { it._order = i; it._key = key(it); });
    col.sort((a, b) => (a._key === b._key ? a._order - b._order : (a._key === Infinity ? 1 : b._key === Infinity ? -1 : a._key - b._key)));
    let y = PAD;
    for (const it of col) {
      const h = nodeHeight(it, expanded.has(it.id));
      pos.set(it.id, { x: PAD + l * (NW + GX), y, h, item: it });
      y += h + GY;
    }
    height = Math.max(height, y);
  }
  const width = PAD * 2 + (levels.length ? levels[levels.length - 1] + 1 : 1) * (NW + GX);
  return { parents, pos, width, height: Math.max(height, NH + 2 * PAD) };
}

class DagView {
  // onSelect(work id or null): a node was clicked; onExpand(): the set of unfolded works changed
  constructor(onSelect, onExpand) {
    this.onSelect = onSelect;
    this.onExpand = onExpand;
    this.expanded = new Set();
    this.view = null;  // {k, tx, ty} once fitted or moved
    this.svg = el("svg:svg", { id: "dag", role: "img", "aria-label": "workflow DAG" });
    this.viewport = el("svg:g", { class: "viewport" });
    this.svg.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" }))),
    this.viewport);
    const tools = el("div", { class: "dag-tools" },
      el("button", { class: "zoom-in", title: "zoom in", text: "+", onclick: () => this.zoomBy(1.25) }),
      el("button", { class: "zoom-out", title: "zoom out", text: "−", onclick: () => this.zoomBy(0.8) }),
      el("button", { class: "zoom-fit", title: "fit the whole DAG", text: "fit", onclick: () => this.fit() }),
      el("button", { class: "expand-all", text: "expand all jobs", onclick: () => { this.dag.nodes.forEach(n => this.expanded.add(n.id)); this.onExpand(); } }),
      el("button", { class: "collapse-all", text: "collapse all jobs", onclick: () => { this.expanded.clear(); this.draw(); } }),
      el("span", { class: "hint", text: "wheel: zoom · drag: pan" }));
    this.root = el("div", { id: "dag-wrap" }, tools, this.svg);
    this.bindPanZoom();
  }

  bindPanZoom() {
    this.svg.addEventListener("wheel", ev => {
      ev.preventDefault();
      const r = this.svg.getBoundingClientRect();
      this.zoomBy(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
    }, { passive: false });
    // the SVG captures the pointer while a button is down, so a drag that leaves it still pans (and no listener
    // outlives this view)
    let drag = null;
    this.svg.addEventListener("pointerdown", ev => {
      drag = { x: ev.clientX, y: ev.clientY, moved: false, id: ev.pointerId };
    });
    this.svg.addEventListener("pointermove", ev => {
      if (!drag || !this.view) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!drag.moved) this.svg.setPointerCapture(drag.id);
      drag.moved = true;
      this.view.tx += dx; this.view.ty += dy;
      drag.x = ev.clientX; drag.y = ev.clientY;
      this.apply();
    });
    this.svg.addEventListener("pointerup", () => { this.justDragged = drag && drag.moved; drag = null; });
    // a drag that ends on a node is a pan, not a click
    this.svg.addEventListener("click", ev => { if (this.justDragged) { ev.stopPropagation(); this.justDragged = false; } }, true);
  }

  zoomBy(f, cx, cy) {
    if (!this.view) return;
    const r = this.svg.getBoundingClientRect();
    if (cx === undefined) {
      // the buttons zoom around the middle of the part of the DAG in view, so it stays in view
      const v = this.view, x1 = Math.max(0, v.tx), y1 = Math.max(0, v.ty);
      const x2 = Math.min(r.width, v.tx + this.size.width * v.k), y2 = Math.min(r.height, v.ty + this.size.height * v.k);
      [cx, cy] = x2 > x1 && y2 > y1 ? [(x1 + x2) / 2, (y1 + y2) / 2] : [r.width / 2, r.height / 2];
    }
    const k = Math.min(4, Math.max(0.05, this.view.k * f));
    this.view.tx = cx - (cx - this.view.tx) * (k / this.view.k);
    this.view.ty = cy - (cy - this.view.ty) * (k / this.view.k);
    this.view.k = k;
    this.apply();
  }

  fit() {
    const r = this.svg.getBoundingClientRect();
    const k = Math.min(1, (r.width || 800) / this.size.width, (r.height || 500) / this.size.height);
    this.view = { k, tx: ((r.width || 800) - this.size.width * k) / 2, ty: 0 };
    this.apply();
  }

  apply() {
    const v = this.view;
    this.viewport.setAttribute("transform", `translate(${v.tx.toFixed(1)},${v.ty.toFixed(1)}) scale(${v.k.toFixed(4)})`);
    this.svg.dataset.zoom = v.k.toFixed(3);
  }

  update(dag, selected) {
    this.dag = dag;
    this.selected = selected;
    this.labels = workLabels(dag.nodes);
    this.draw();
  }

  draw() {
    const dag = this.dag;
    const { parents, pos, width, height } = dagLayout(dag, this.expanded);
    this.size = { width, height };
    const edges = el("svg:g", { class: "edges" });
    const curve = (a, b) => {
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
      return `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    };
    for (const [id, p] of pos) {
      const ps = (parents.get(id) || []).filter(q => pos.has(q));
      if (!ps.length && p.x === PAD + NW + GX) {
        edges.append(el("svg:path", { class: "edge root", d: curve({ x: PAD, y: PAD }, p), "marker-end": "url(#arrow)" }));
      }
      for (const q of ps) edges.append(el("svg:path", { class: "edge", "data-source": q, "data-target": id,
        d: curve(pos.get(q), p), "marker-end": "url(#arrow)" }));
    }
    const wf = dag.workflow;
    const rootG = el("svg:g", { class: "node workflow-node" + (this.selected === null ? " selected" : ""), "data-status": wf.status, "data-id": wf.id });
    this.box(rootG, PAD, PAD, NH, wf.name || short(wf.id), `workflow · ${wf.status}`, wf.status);
    rootG.addEventListener("click", () => this.onSelect(null));
    const nodes = [];
    for (const [id, p] of pos) {
      const it = p.item;
      if (it.kind === "workflow") nodes.push(this.childNode(it, p));
      else nodes.push(this.workNode(it, p));
    }
    this.viewport.replaceChildren(edges, rootG, ...nodes);
    this.svg.dataset.width = width;
    this.svg.dataset.height = height;
    if (!this.view) this.fit(); else this.apply();
  }

  box(g, x, y, h, title, subtitle, status) {
    g.append(el("svg:rect", { x, y, width: NW, height: h, rx: 8, fill: COLORS[status] || COLORS.unknown }));
    g.append(el("svg:text", { x: x + 10, y: y + 22, class: "title", text: title.length > 24 ? title.slice(0, 23) + "…" : title }));
    g.append(el("svg:text", { x: x + 10, y: y + 42, text: subtitle }));
  }

  workNode(n, p) {
    const open = this.expanded.has(n.id);
    const label = this.labels.get(n.id);
    const g = el("svg:g", { class: "node work-node" + (this.selected === n.id ? " selected" : "") + (open ? " expanded" : ""),
      "data-status": n.status, "data-id": n.id, "data-name": n.name, "data-label": label });
    const c = n.counts;
    this.box(g, p.x, p.y, p.h, label, `${c.finished}/${c.total} ok` + (c.failed ? ` · ${c.failed} failed` : "")
      + (c.running ? ` · ${c.running} running` : ""), n.status);
    g.append(el("svg:title", { text: `${label} (${n.status}) ${countsText(c)}` }));
    g.addEventListener("click", () => this.onSelect(n.id));
    const toggle = el("svg:g", { class: "toggle", "data-id": n.id },
      el("svg:rect", { x: p.x + NW - 24, y: p.y + 6, width: 18, height: 18, rx: 3 }),
      el("svg:text", { x: p.x + NW - 15, y: p.y + 19, "text-anchor": "middle", text: open ? "−" : "+" }),
      el("svg:title", { text: open ? "collapse the jobs" : "show the jobs" }));
    toggle.addEventListener("click", ev => {
      ev.stopPropagation();
      if (this.expanded.has(n.id)) { this.expanded.delete(n.id); this.draw(); } else { this.expanded.add(n.id); this.onExpand(); }
    });
    g.append(toggle);
    if (open) {
      const dots = el("svg:g", { class: "job-dots" });
      n.jobs.slice(0, MAX_DOTS).forEach((job, i) => {
        const x = p.x + 8 + (i % DOTS_PER_ROW) * (DOT + DOT_GAP), y = p.y + NH + Math.floor(i / DOTS_PER_ROW) * (DOT + DOT_GAP) - 4;
        const a = el("svg:a", { href: `#/job/${job.id}`, class: "job-dot", "data-status": job.status, "data-id": job.id },
          el("svg:rect", { x, y, width: DOT, height: DOT, rx: 2, fill: COLORS[job.status] || COLORS.unknown }),
          el("svg:title", { text: `${job.job_key} ${job.args || ""} — ${job.status}, attempt ${job.attempt}` }));
        a.addEventListener("click", ev => ev.stopPropagation());
        dots.append(a);
      });
      if (n.counts.total > n.jobs.length) {
        dots.append(el("svg:text", { x: p.x + 8, y: p.y + p.h - 4, class: "more", text: `+${n.counts.total - n.jobs.length} more (jobs table)` }));
      }
      g.append(dots);
    }
    return g;
  }

  childNode(c, p) {
    const g = el("svg:g", { class: "node subworkflow-node", "data-status": c.status, "data-id": c.id, "data-name": c.name });
    this.box(g, p.x, p.y, p.h, "⤷ " + (c.name || short(c.id)), `${c.n_works} works · ${c.counts.total} jobs`, c.status);
    g.append(el("svg:title", { text: `open sub-workflow ${c.name} (${c.status})` }));
    g.addEventListener("click", () => { location.hash = "#/workflow/" + c.id; });
    return g;
  }
}
