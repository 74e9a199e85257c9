// One job's page: its state, its history of attempts (events) and its log, tailed live while it runs.
"use strict";

const LOG_TAILS = [100, 200, 1000, 10000];

class JobLogView {
  constructor(ref) {
    this.ref = ref;
    this.tail = 200;
    this.follow = true;
    this.head = el("div", { class: "job-head" });
    this.events = el("tbody", {});
    this.pre = el("pre", { id: "job-log", class: "job-log", text: "loading…" });
    this.live = el("span", { class: "live-note" });
    const tail = el("select", { id: "log-tail", "aria-label": "lines", onchange: e => { this.tail = Number(e.target.value); this.load(); } },
      ...LOG_TAILS.map(n => el("option", { value: n, text: `last ${n} lines`, selected: n === this.tail })));
    const follow = el("label", {}, el("input", { id: "log-follow", type: "checkbox", checked: true,
      onchange: e => { this.follow = e.target.checked; } }), " follow");
    this.root = el("div", { id: "job-view" }, this.head,
      el("h2", { text: "History" }),
      el("table", { id: "job-events" }, el("thead", {}, el("tr", {}, ...["Time", "Event", "Attempt", "Worker", "Message"].map(h => el("th", { text: h })))), this.events),
      el("h2", {}, "Log ", this.live), el("div", { class: "filters" }, tail, follow), this.pre);
  }

  async load() {
    const log = await api(`/jobs/${encodeURIComponent(this.ref)}/log?tail=${this.tail}`);
    const job = log.job;
    this.job = job;
    const work = await api(`/works/${encodeURIComponent(job.work_id)}`).catch(() => null);
    fill($("crumbs"), el("a", { href: "#/", text: "workflows" }), " / ",
      job.workflow_id ? el("a", { href: `#/workflow/${job.workflow_id}`, text: short(job.workflow_id) }) : "-", " / ",
      (work && work.name) || short(job.work_id), " / job " + job.id);
    fill(this.head, el("h1", {}, `job ${job.id} `, badge(job.status)),
      el("p", { class: "mono", text: `key ${job.job_key} · work ${(work && work.name) || ""} ${job.work_id}` }),
      el("p", { text: `attempt ${job.attempt} · worker ${job.worker || "-"} · started ${fmtTime(job.started_at)} · `
        + (job.finished_at ? `took ${fmtDur(job.started_at, job.finished_at)}` : job.started_at ? `running for ${fmtDur(job.started_at)}` : "not started") }),
      job.args ? el("p", { class: "mono args", text: "args " + job.args }) : null,
      job.error ? el("p", { class: "error-text job-error", text: job.error }) : null);
    fill(this.events, ...log.events.map(e => el("tr", { class: "event", "data-type": e.type },
      el("td", { text: fmtTime(e.ts) }), el("td", { text: e.type }), el("td", { text: String(e.attempt) }),
      el("td", { class: "mono", text: e.worker || "" }), el("td", { text: e.message || "" }))));
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.pre.textContent = log.text;
    if (this.follow && atBottom) this.pre.scrollTop = this.pre.scrollHeight;
    const live = !JOB_TERMINAL.has(job.status);
    this.live.textContent = live ? "(live: refreshed every second while the job runs)" : "(stored)";
    this.pre.dataset.live = live ? "1" : "0";
    return live;
  }
}
