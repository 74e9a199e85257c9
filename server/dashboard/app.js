// iworkflow dashboard: routing, the workflow list (nested workflows under their parent), a workflow's page
// (DAG, jobs, timeline tabs; cancel, retry failed), and the refresh loop. Pages live in dag.js, jobs.js, timeline.js,
// workers.js and joblog.js.
"use strict";

const REFRESH_MS = 2000;
const LOG_REFRESH_MS = 1000;
const state = { route: null, page: null, timer: null, openChildren: new Set() };

function parseRoute() {
  const h = location.hash;
  let m = h.match(/^#\/workflow\/([^/]+)\/work\/([^/]+)/);
  if (m) return { view: "workflow", id: decodeURIComponent(m[1]), tab: "dag", work: decodeURIComponent(m[2]), key: "wf:" + m[1] };
  m = h.match(/^#\/workflow\/([^/]+)(?:\/(dag|jobs|timeline))?/);
  if (m) return { view: "workflow", id: decodeURIComponent(m[1]), tab: m[2] || "dag", key: "wf:" + m[1] };
  m = h.match(/^#\/artifacts(?:\/([^/]+))?/);
  if (m) return { view: "artifacts", name: m[1] ? decodeURIComponent(m[1]) : null, key: "artifacts:" + (m[1] || "") };
  m = h.match(/^#\/job\/([^/]+)/);
  if (m) return { view: "job", id: decodeURIComponent(m[1]), key: "job:" + m[1] };
  if (h.startsWith("#/workers")) return { view: "workers", key: "workers" };
  return { view: "list", key: "list" };
}

// --- workflow list ------------------------------------------------------------------------------
function workflowRow(wf, depth) {
  const open = state.openChildren.has(wf.id);
  const toggle = wf.n_children ? el("button", { class: "children-toggle", "data-id": wf.id,
    text: `${open ? "▾" : "▸"} ${wf.n_children} sub-workflow${wf.n_children === 1 ? "" : "s"}`,
    onclick: ev => { ev.stopPropagation(); if (open) state.openChildren.delete(wf.id); else state.openChildren.add(wf.id); refresh(); } }) : null;
  return el("tr", { class: "clickable wf-row" + (depth ? " nested" : ""), "data-id": wf.id, "data-parent": wf.parent_id || "",
      onclick: () => { location.hash = "#/workflow/" + wf.id; } },
    el("td", { style: `padding-left:${10 + depth * 22}px` }, depth ? "↳ " : "", wf.name || "(unnamed)", " ", toggle),
    el("td", { class: "mono", text: short(wf.id) }),
    el("td", {}, badge(wf.status)),
    el("td", { text: String(wf.n_works) }),
    el("td", {}, el("div", { class: "counts", text: countsText(wf.counts) }), countsBar(wf.counts)),
    el("td", { text: fmtTime(wf.submitted_at) }),
    el("td", { text: fmtDur(wf.submitted_at, wf.finished_at) }));
}

async function workflowRows(wfs, depth) {
  const rows = [];
  for (const wf of wfs) {
    rows.push(workflowRow(wf, depth));
    if (wf.n_children && state.openChildren.has(wf.id) && depth < 8) {
      const children = await api(`/workflows?parent_id=${encodeURIComponent(wf.id)}&limit=1000`);
      rows.push(...await workflowRows(children.reverse(), depth + 1));
    }
  }
  return rows;
}

class ListPage {
  constructor() {
    this.body = el("tbody", {});
    this.empty = el("p", { id: "empty", hidden: true, text: "No workflows recorded yet. Run one with events on (a broker or server_url configured)." });
    this.root = el("section", { id: "list-view" }, el("h1", { text: "Workflows" }),
      el("table", { id: "workflows" }, el("thead", {}, el("tr", {}, ...["Name", "Id", "Status", "Works", "Jobs", "Submitted", "Duration"].map(h => el("th", { text: h })))), this.body),
      this.empty);
  }

  async load() {
    const workflows = await api("/workflows?top=true&limit=200");
    fill(this.body, ...await workflowRows(workflows, 0));
    this.empty.hidden = workflows.length > 0;
    fill($("crumbs"));
  }
}

// --- one workflow -------------------------------------------------------------------------------
class WorkflowPage {
  constructor(route) {
    this.id = route.id;
    this.tab = route.tab;
    this.selected = null;
    this.head = el("div", { id: "wf-head" });
    this.body = el("div", { id: "wf-body" });
    this.root = el("section", { id: "workflow-view" }, this.head, this.body);
    this.dagView = new DagView(id => { this.selected = id; this.panelTable = null; this.load(); }, () => this.load());
    this.panel = el("aside", { id: "panel" });
  }

  setTab(tab) { if (tab !== this.tab) { this.tab = tab; this.built = null; } }

  async load() {
    const dag = await api(`/workflows/${encodeURIComponent(this.id)}/dag?jobs=false`);
    this.dag = dag;
    this.labels = workLabels(dag.nodes);
    const wf = dag.workflow;
    const crumbs = [el("a", { href: "#/", text: "workflows" })];
    if (dag.parent) crumbs.push(" / ", el("a", { id: "parent-link", href: `#/workflow/${dag.parent.id}`, text: "↑ " + (dag.parent.name || short(dag.parent.id)) }));
    crumbs.push(" / ", wf.name || short(wf.id));
    fill($("crumbs"), ...crumbs);
    this.renderHead(dag);
    if (this.built !== this.tab) this.buildTab();
    if (this.tab === "dag") await this.loadDag(dag);
    else if (this.tab === "jobs") await this.jobTable.load();
    else await renderTimeline(this.body, wf, dag.nodes);
  }

  async workerNames() {
    return (await api("/workers")).map(w => w.name);
  }

  renderHead(dag) {
    const wf = dag.workflow;
    const tabs = ["dag", "jobs", "timeline"].map(t => el("a", { class: "tab" + (t === this.tab ? " active" : ""), "data-tab": t,
      href: `#/workflow/${wf.id}/${t}`, text: t === "dag" ? "DAG" : t[0].toUpperCase() + t.slice(1) }));
    // one actions element for the page's life: a half-done confirm survives the refreshes
    if (!this.actions) this.actions = el("span", { class: "actions" }, this.cancelButton(wf), this.retryButton(wf));
    this.actions.hidden = ["finished", "failed", "subfinished", "cancelled"].includes(wf.status) && !this.actionDone;
    this.retryBtn.hidden = !(wf.counts.failed > 0);
    fill(this.head,
      el("h1", { text: wf.name || wf.id }), badge(wf.status), this.actions,
      dag.parent ? el("p", { class: "hint" }, "nested in ", el("a", { href: `#/workflow/${dag.parent.id}`, text: dag.parent.name || dag.parent.id })) : null,
      el("div", { class: "counts", text: `${dag.nodes.length} works · ${dag.children.length} sub-workflows · ${countsText(wf.counts)}` }),
      countsBar(wf.counts), el("nav", { class: "tabs" }, ...tabs));
  }

  cancelButton(wf) {
    const msg = el("span", { class: "action-msg" });
    const confirm = el("button", { class: "confirm-cancel danger", hidden: true, text: "Really cancel the workflow?", onclick: async () => {
      confirm.disabled = true;
      try {
        const r = await apiPost(`/workflows/${encodeURIComponent(wf.id)}/cancel`);
        msg.textContent = `cancelled: ${r.jobs_cancelled} unfinished jobs`;
        confirm.hidden = true;
        this.actionDone = true;
      } catch (e) { msg.textContent = "cancel refused: " + e.message; confirm.disabled = false; return; }
      refresh();
    } });
    const button = el("button", { class: "cancel-btn", text: "Cancel workflow", onclick: () => { button.hidden = true; confirm.hidden = false; } });
    return el("span", {}, button, confirm, msg);
  }

  // Failed jobs of the works still running go to their drivers again; a work that ended is refused with the reason.
  retryButton(wf) {
    const msg = el("span", { class: "retry-msg" });
    const button = this.retryBtn = el("button", { class: "retry-btn", text: "Retry failed jobs", onclick: async () => {
      button.disabled = true;
      try {
        const r = await apiPost(`/workflows/${encodeURIComponent(wf.id)}/retry-failed`);
        msg.textContent = `retry sent: ${r.jobs_retried} failed jobs` +
          (r.refused.length ? "; not retried: " + r.refused.map(x => x.reason).join("; ") : "");
      } catch (e) { msg.textContent = "retry refused: " + e.message; }
      button.disabled = false;
      refresh();
    } });
    return el("span", {}, button, msg);
  }

  buildTab() {
    this.built = this.tab;
    if (this.tab === "dag") {
      fill(this.body, el("div", { class: "split" }, this.dagView.root, this.panel));
      this.panelTable = null;
    } else if (this.tab === "jobs") {
      this.jobTable = new JobTable({ workflow_id: this.id }, this.labels, []);
      this.workerNames().then(names => this.jobTable.setWorkers(names));
      fill(this.body, this.jobTable.root);
    } else fill(this.body, el("p", { class: "hint", text: "loading…" }));
  }

  async loadDag(dag) {
    if (this.selected && !dag.nodes.some(n => n.id === this.selected)) this.selected = null;
    // only the unfolded works' jobs are fetched (the DAG itself carries counts): one request per work for a
    // few, one for the whole workflow (its first 5000 jobs) for more; "+N more" says what is not drawn
    const open = dag.nodes.filter(n => this.dagView.expanded.has(n.id));
    if (open.length > 4) {
      const byWork = new Map(open.map(n => [n.id, []]));
      for (const j of (await apiPage(`/jobs?workflow_id=${encodeURIComponent(this.id)}&limit=5000`)).items) {
        const list = byWork.get(j.work_id);
        if (list && list.length < MAX_DOTS) list.push(j);
      }
      open.forEach(n => { n.jobs = byWork.get(n.id); });
    } else {
      await Promise.all(open.map(async n => {
        n.jobs = (await apiPage(`/jobs?work_id=${encodeURIComponent(n.id)}&limit=${MAX_DOTS}`)).items;
      }));
    }
    this.dagView.update(dag, this.selected);
    const node = dag.nodes.find(n => n.id === this.selected);
    if (!node) { fill(this.panel, ...this.workflowPanel(dag)); return; }
    if (!this.panelTable || this.panelTable.scope.work_id !== node.id) {
      this.panelTable = new JobTable({ work_id: node.id }, this.labels, []);
      this.panelHead = el("div", {});
      fill(this.panel, this.panelHead, this.panelTable.root);
    }
    const c = node.counts;
    fill(this.panelHead, el("h2", { text: this.labels.get(node.id) }),
      el("p", {}, badge(node.status), " ", el("span", { class: "counts", text: countsText(c) })), countsBar(c),
      el("p", { class: "mono", text: `work ${node.id}` }),
      el("p", { text: `executor ${node.executor || "-"} · queue ${node.queue || "-"} · submitted ${fmtTime(node.submitted_at)}`
        + ` · duration ${fmtDur(node.submitted_at, node.finished_at)}` }));
    await this.panelTable.load();
  }

  workflowPanel(dag) {
    const wf = dag.workflow;
    return [
      el("h2", { text: wf.name || wf.id }),
      el("p", {}, badge(wf.status), " ", el("span", { class: "counts", text: countsText(wf.counts) })),
      el("p", { class: "mono", text: "id " + wf.id }),
      el("p", { text: `submitted ${fmtTime(wf.submitted_at)} · duration ${fmtDur(wf.submitted_at, wf.finished_at)}` }),
      wf.error ? el("p", { class: "error-text", text: wf.error }) : null,
      dag.children.length ? el("div", { id: "children" }, el("h3", { text: "Sub-workflows" }),
        el("ul", {}, ...dag.children.map(c => el("li", {}, el("a", { href: `#/workflow/${c.id}`, class: "child-link", text: c.name || c.id }), " ", badge(c.status),
          " ", el("span", { class: "counts", text: countsText(c.counts) }))))) : null,
      el("p", { class: "hint", text: "Click a work node for its jobs; + on a node shows its jobs in the DAG." }),
    ].filter(Boolean);
  }
}

class JobPage {
  constructor(route) { this.view = new JobLogView(route.id); this.root = this.view.root; }
  async load() { this.live = await this.view.load(); }
}

// artifacts.js renders into #artifacts-view
class ArtifactsPage {
  constructor(route) { this.name = route.name; this.root = el("section", { id: "artifacts-view" }); }
  async load() { await renderArtifacts(this.name); }
}

class WorkersPage {
  constructor() { this.root = el("section", { id: "workers-view" }); }
  async load() { fill($("crumbs"), el("a", { href: "#/", text: "workflows" }), " / workers"); await renderWorkers(this.root); }
}

// --- routing and refresh ------------------------------------------------------------------------
function pageFor(route) {
  if (route.view === "workflow") return new WorkflowPage(route);
  if (route.view === "job") return new JobPage(route);
  if (route.view === "workers") return new WorkersPage();
  if (route.view === "artifacts") return new ArtifactsPage(route);
  return new ListPage();
}

async function refresh() {
  const route = parseRoute();
  if (!state.page || state.route.key !== route.key) {
    state.page = pageFor(route);
    fill($("main"), state.page.root);
  }
  if (route.view === "workflow") {
    state.page.setTab(route.tab);
    // #/workflow/ID/work/WORK (a link from elsewhere) selects that work once, when the link is followed
    if (route.work && (!state.route || state.route.work !== route.work)) { state.page.selected = route.work; state.page.panelTable = null; }
  }
  state.route = route;
  for (const a of document.querySelectorAll("header nav.top a")) a.classList.toggle("active", a.dataset.view === route.view);
  try {
    await state.page.load();
    $("error").hidden = true;
    $("refresh").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = e.message;
  }
}

function schedule() {
  clearTimeout(state.timer);
  const live = state.page instanceof JobPage && state.page.live;
  state.timer = setTimeout(async () => { await refresh(); schedule(); }, live ? LOG_REFRESH_MS : REFRESH_MS);
}

window.addEventListener("hashchange", () => { refresh().then(schedule); });
$("auth-form").addEventListener("submit", ev => {
  ev.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("auth-token").value);
  $("auth").hidden = true;
  $("token-state").textContent = "token set";
  refresh();
});
$("token-btn").addEventListener("click", () => showTokenForm("The token is kept in this browser (localStorage) and sent with every request."));
$("token-state").textContent = localStorage.getItem(TOKEN_KEY) ? "token set" : "";
refresh().then(schedule);
