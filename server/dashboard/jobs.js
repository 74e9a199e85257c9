// A job table that filters (status, worker, text), sorts (click a header) and pages, on the server's /api/jobs.
"use strict";

const JOB_COLUMNS = [
  ["id", "Id"], ["job_key", "Key"], [null, "Work"], [null, "Args"], ["status", "Status"], ["attempt", "Attempt"],
  ["worker", "Worker"], ["started_at", "Started"], ["duration", "Took"],
];
const PAGE_SIZES = [25, 50, 100, 500];

class JobTable {
  // scope: the fixed filters ({workflow_id} or {work_id}); labels: work id -> distinct label
  constructor(scope, labels, workers) {
    this.scope = scope;
    this.labels = labels || new Map();
    this.filters = { status: "", worker: "", q: "", work_id: scope.work_id || "" };
    this.sort = "id";
    this.order = "asc";
    this.offset = 0;
    this.limit = 50;
    this.root = el("div", { class: "job-table" });
    this.build(workers || []);
  }

  build(workers) {
    const status = el("select", { class: "f-status", "aria-label": "status", onchange: e => this.set({ status: e.target.value }) },
      el("option", { value: "", text: "any status" }), ...STATUSES.map(s => el("option", { value: s, text: s })));
    // any worker name (exact), suggested from the workers that reported and those seen in the rows
    this.workerList = el("datalist", { id: "workers-" + Math.random().toString(36).slice(2) });
    this.workerSelect = el("input", { class: "f-worker", type: "search", list: this.workerList.id, placeholder: "worker",
      "aria-label": "worker", onchange: e => this.set({ worker: e.target.value.trim() }) });
    this.seen = new Set();
    this.setWorkers(workers);
    let timer = null;
    const text = el("input", { class: "f-text", type: "search", placeholder: "key, args or error contains…", "aria-label": "text",
      oninput: e => { clearTimeout(timer); timer = setTimeout(() => this.set({ q: e.target.value }), 250); } });
    const controls = [status, this.workerSelect, text];
    if (!this.scope.work_id && this.labels.size > 1) {
      controls.splice(0, 0, el("select", { class: "f-work", "aria-label": "work", onchange: e => this.set({ work_id: e.target.value }) },
        el("option", { value: "", text: "any work" }), ...[...this.labels].map(([id, label]) => el("option", { value: id, text: label }))));
    }
    const size = el("select", { class: "f-size", "aria-label": "rows per page", onchange: e => { this.limit = Number(e.target.value); this.offset = 0; this.load(); } },
      ...PAGE_SIZES.map(n => el("option", { value: n, text: `${n} / page`, selected: n === this.limit })));
    this.head = el("tr", {});
    this.body = el("tbody", {});
    this.info = el("span", { class: "page-info" });
    this.prev = el("button", { class: "page-prev", text: "‹ prev", onclick: () => { this.offset = Math.max(0, this.offset - this.limit); this.load(); } });
    this.next = el("button", { class: "page-next", text: "next ›", onclick: () => { this.offset += this.limit; this.load(); } });
    this.root.append(el("div", { class: "filters" }, ...controls, size, this.workerList),
      el("table", { class: "jobs" }, el("thead", {}, this.head), this.body),
      el("div", { class: "pager" }, this.prev, this.info, this.next));
    this.renderHead();
  }

  setWorkers(workers) {
    for (const w of workers) this.seen.add(w);
    this.workerList.replaceChildren(...[...this.seen].sort().map(w => el("option", { value: w })));
  }

  set(changes) { Object.assign(this.filters, changes); this.offset = 0; this.load(); }

  renderHead() {
    this.head.replaceChildren(...JOB_COLUMNS.map(([key, title]) => {
      if (!key) return el("th", { text: title });
      const arrow = this.sort === key ? (this.order === "asc" ? " ▲" : " ▼") : "";
      return el("th", { class: "sortable", "data-sort": key, text: title + arrow, onclick: () => {
        this.order = this.sort === key && this.order === "asc" ? "desc" : "asc";
        this.sort = key;
        this.offset = 0;
        this.renderHead();
        this.load();
      } });
    }));
  }

  query() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...this.scope, ...this.filters })) if (v) p.set(k, v);
    p.set("sort", (this.order === "desc" ? "-" : "") + this.sort); p.set("limit", this.limit); p.set("offset", this.offset);
    return "/jobs?" + p.toString();
  }

  async load() {
    const seq = this.seq = (this.seq || 0) + 1;
    const { items, total } = await apiPage(this.query());
    if (seq !== this.seq) return;  // a later load (another filter, sort or page) was asked for: this answer is stale
    this.total = total;
    this.body.replaceChildren(...items.map(job => this.row(job)));
    const fresh = items.map(j => j.worker).filter(w => w && !this.seen.has(w));
    if (fresh.length) this.setWorkers(fresh);
    if (!items.length) this.body.append(el("tr", {}, el("td", { colspan: JOB_COLUMNS.length, class: "hint", text: "no job matches" })));
    const first = total ? this.offset + 1 : 0;
    this.info.textContent = `${first}–${this.offset + items.length} of ${total}`;
    this.prev.disabled = this.offset === 0;
    this.next.disabled = this.offset + items.length >= total;
  }

  row(job) {
    const tr = el("tr", { class: "job", "data-status": job.status, "data-key": job.job_key, "data-id": job.id },
      el("td", {}, jobLink(job, String(job.id))),
      el("td", {}, jobLink(job)),
      el("td", { text: this.labels.get(job.work_id) || short(job.work_id) }),
      el("td", { class: "mono args", text: job.args || "" }),
      el("td", {}, badge(job.status), job.cached ? el("span", { class: "hint", text: " cached" }) : null),
      el("td", { text: String(job.attempt) }),
      el("td", { class: "mono", text: job.worker || "-" }),
      el("td", { text: fmtClock(job.started_at) }),
      el("td", { text: job.started_at ? fmtDur(job.started_at, job.finished_at) : "-" }));
    if (!job.error) return tr;
    const frag = document.createDocumentFragment();
    frag.append(tr, el("tr", { class: "job-error-row" }, el("td", { colspan: JOB_COLUMNS.length },
      el("div", { class: "error-text job-error", text: job.error }),
      el("a", { class: "joblog-btn", href: `#/job/${job.id}`, text: "traceback and log ›" }))));
    return frag;
  }
}
