// The task stream (each job as a bar on its worker's lane over time) and a duration histogram per work.
"use strict";

const PALETTE = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#059669", "#b45309", "#7c3aed"];
const LANE_H = 14, LANE_GAP = 2, LABEL_W = 170, AXIS_H = 22;

// Lanes per worker: a job goes on the first lane of its worker that is free when it starts.
function streamLanes(jobs) {
  const workers = new Map();
  const placed = [];
  for (const job of [...jobs].sort((a, b) => a.started_at - b.started_at)) {
    const name = job.worker || "(unknown worker)";
    if (!workers.has(name)) workers.set(name, []);
    const ends = workers.get(name);
    let lane = ends.findIndex(end => end <= job.started_at);
    if (lane < 0) { lane = ends.length; ends.push(0); }
    ends[lane] = job.finished_at || Date.now() / 1000;
    placed.push({ job, worker: name, lane });
  }
  return { workers, placed };
}

function taskStream(jobs, labels, colorOf, width) {
  const started = jobs.filter(j => j.started_at);
  if (!started.length) return el("p", { class: "hint", text: "No job has started yet." });
  const { workers, placed } = streamLanes(started);
  const now = Date.now() / 1000;
  const t0 = Math.min(...started.map(j => j.started_at));
  const t1 = Math.max(...started.map(j => j.finished_at || now));
  const span = Math.max(t1 - t0, 1e-3);
  const plotW = Math.max(200, width - LABEL_W - 20);
  const x = t => LABEL_W + ((t - t0) / span) * plotW;
  const top = new Map();
  let y = AXIS_H;
  for (const [name, ends] of workers) { top.set(name, y); y += ends.length * (LANE_H + LANE_GAP) + 8; }
  const svg = el("svg:svg", { id: "task-stream", width, height: y, viewBox: `0 0 ${width} ${y}` });
  for (let i = 0; i <= 5; i++) {
    const t = t0 + (span * i) / 5;
    svg.append(el("svg:line", { x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: y, class: "grid" }),
      el("svg:text", { x: x(t), y: 12, class: "axis", "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle", text: "+" + fmtSeconds(t - t0) }));
  }
  for (const [name, ends] of workers) {
    svg.append(el("svg:text", { x: 4, y: top.get(name) + LANE_H - 3, class: "lane-label", text: name.length > 26 ? "…" + name.slice(-25) : name },
      el("svg:title", { text: `${name}: ${ends.length} lane(s)` })));
  }
  for (const { job, worker, lane } of placed) {
    const x1 = x(job.started_at), x2 = x(job.finished_at || now);
    const a = el("svg:a", { href: `#/job/${job.id}`, class: "task", "data-status": job.status, "data-worker": worker, "data-id": job.id },
      el("svg:rect", { x: x1, y: top.get(worker) + lane * (LANE_H + LANE_GAP), width: Math.max(1.5, x2 - x1), height: LANE_H,
        fill: colorOf(job.work_id), class: job.status === "failed" ? "failed" : job.finished_at ? "" : "live" }),
      el("svg:title", { text: `${labels.get(job.work_id) || short(job.work_id)} ${job.job_key} (${job.status}, attempt ${job.attempt}) on ${worker}: ${fmtDur(job.started_at, job.finished_at)}` }));
    svg.append(a);
  }
  return svg;
}

// d: the server's Durations of one work (count, min, p50, p90, max, bin edges and counts)
function histogram(label, d, color) {
  const W = 240, H = 90, B = 16;
  const box = el("div", { class: "histogram", "data-label": label, "data-count": d.count });
  const stats = d.count
    ? `n ${d.count} · min ${fmtSeconds(d.min)} · median ${fmtSeconds(d.p50)} · p90 ${fmtSeconds(d.p90)} · max ${fmtSeconds(d.max)}`
    : "no finished job yet";
  box.append(el("div", { class: "histogram-title", text: label }), el("div", { class: "counts", text: stats }));
  if (!d.count) return box;
  const peak = Math.max(...d.counts);
  const svg = el("svg:svg", { width: W, height: H + B, viewBox: `0 0 ${W} ${H + B}` });
  const bw = W / d.counts.length;
  d.counts.forEach((n, i) => {
    const h = (n / peak) * (H - 4);
    svg.append(el("svg:rect", { x: i * bw + 1, y: H - h, width: Math.max(1, bw - 2), height: h, fill: color, class: "bin", "data-count": n },
      el("svg:title", { text: `${n} job(s) took ${fmtSeconds(d.edges[i])} – ${fmtSeconds(d.edges[i + 1])}` })));
  });
  svg.append(el("svg:text", { x: 0, y: H + 13, class: "axis", text: fmtSeconds(d.min) }),
    el("svg:text", { x: W, y: H + 13, class: "axis", "text-anchor": "end", text: fmtSeconds(d.max) }));
  box.append(svg);
  return box;
}

async function renderTimeline(container, wf, works) {
  const id = encodeURIComponent(wf.id);
  const [timeline, durations] = await Promise.all([api(`/timeline?workflow_id=${id}&limit=5000`), api(`/workflows/${id}/durations?bins=20`)]);
  const jobs = timeline.jobs;
  const labels = workLabels(works);
  const colors = new Map(works.map((w, i) => [w.id, PALETTE[i % PALETTE.length]]));
  const colorOf = id => colors.get(id) || "#64748b";
  const width = Math.max(600, container.clientWidth - 20);
  const legend = el("div", { class: "legend" }, ...works.map(w => el("span", { class: "legend-item" },
    el("span", { class: "swatch", style: `background:${colorOf(w.id)}` }), labels.get(w.id))));
  fill(container,
    el("h2", { text: "Task stream" }),
    el("p", { class: "hint", text: `jobs per worker over time: ${jobs.length} started jobs${timeline.truncated ? " (the first 5000)" : ""}; `
      + "a worker gets one lane per job running at once; red outline: failed; pale: still running; click a job for its log" }),
    legend, el("div", { class: "stream-wrap" }, taskStream(jobs, labels, colorOf, width)),
    el("h2", { text: "Run times of finished jobs, per work" }),
    el("div", { class: "histograms" }, ...durations.map(d => histogram(labels.get(d.work_id) || d.name, d, colorOf(d.work_id)))));
}
