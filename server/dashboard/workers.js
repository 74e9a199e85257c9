// The workers page: each worker as it reports itself (queue, slots, last heartbeat, lost) and the jobs it runs.
"use strict";

async function renderWorkers(container) {
  const running = (await apiPage("/jobs?status=running&limit=5000&sort=started_at")).items;
  const byWorker = new Map();
  for (const j of running) {
    const w = j.worker || "(unknown worker)";
    if (!byWorker.has(w)) byWorker.set(w, []);
    byWorker.get(w).push(j);
  }
  const workers = await api("/workers");
  const known = new Set(workers.map(w => w.name));
  // a job can name a worker that never reported itself (an executor without worker reports): show it too
  for (const name of byWorker.keys()) if (!known.has(name)) workers.push({ name, state: "unreported" });
  const runningJobs = name => {
    const jobs = byWorker.get(name) || [];
    if (!jobs.length) return el("td", { class: "hint", text: "-" });
    return el("td", { class: "running-jobs" }, ...jobs.slice(0, 20).flatMap(j => [jobLink(j), " "]),
      jobs.length > 20 ? el("span", { class: "hint", text: `+${jobs.length - 20} more` }) : null);
  };
  const rows = workers.map(w => el("tr", { class: "worker", "data-name": w.name, "data-state": w.state },
    el("td", { class: "mono", text: w.name }),
    el("td", {}, el("span", { class: "badge worker-" + w.state, "data-state": w.state, text: w.state })),
    el("td", { text: w.queue || "-" }),
    el("td", { text: w.slots !== undefined ? String(w.slots) : "-" }),
    el("td", { class: "n-running", title: "jobs the server records as running on it", text: String((byWorker.get(w.name) || []).length) }),
    el("td", { class: "n-held", title: "as the worker last reported: running / held (prefetched)",
      text: w.running !== undefined ? `${w.running} / ${w.held}` : "-" }),
    el("td", { text: w.served !== undefined ? String(w.served) : "-" }),
    el("td", { title: fmtTime(w.last_heartbeat), text: fmtAge(w.last_heartbeat) }),
    el("td", { text: fmtTime(w.started_at) }),
    runningJobs(w.name)));
  const lost = workers.filter(w => w.state === "lost").length;
  fill(container, el("h1", { text: "Workers" }),
    el("p", { class: "counts", text: `${workers.length} workers · ${workers.filter(w => w.state === "alive").length} alive · ${lost} lost · ${running.length} jobs running` }),
    el("table", { id: "workers" },
      el("thead", {}, el("tr", {}, ...["Worker", "State", "Queue", "Slots", "Running", "Reported running / held", "Served", "Last heartbeat", "Started", "Running jobs"].map(h => el("th", { text: h })))),
      el("tbody", {}, ...rows)),
    workers.length ? null : el("p", { class: "hint", text: "No worker has reported yet." }));
}
