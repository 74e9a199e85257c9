// iworkflow dashboard, artifacts page: names, then one name's versions with metadata, tags and the job that
// made each (a link to its node in the workflow DAG).  Uses el/api/fmtTime/short from app.js.
"use strict";

function fmtSize(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 ** 2) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1024 ** 3) return (n / 1024 ** 2).toFixed(1) + " MiB";
  return (n / 1024 ** 3).toFixed(2) + " GiB";
}

function madeBy(v) {
  const lin = v.lineage;
  if (!lin.job_key) {
    const text = `driver ${lin.worker}`;
    return lin.workflow_id
      ? el("span", {}, text + " in ", el("a", { class: "lineage-link", href: `#/workflow/${encodeURIComponent(lin.workflow_id)}`, text: "workflow " + short(lin.workflow_id) }))
      : el("span", { text });
  }
  const label = `job ${short(lin.job_key)} of ${lin.work_name || "work " + short(lin.work_id)}`;
  const href = lin.workflow_id
    ? `#/workflow/${encodeURIComponent(lin.workflow_id)}/work/${encodeURIComponent(lin.work_id)}` : null;
  return el("span", {}, href ? el("a", { class: "lineage-link", href, text: label }) : label,
    el("div", { class: "counts", text: `${lin.executor} · ${lin.worker} · attempt ${lin.attempt}` }),
    el("div", { class: "mono counts", title: "call identity (function + source + arguments)",
      text: "call " + (lin.call_identity || "").slice(0, 16) }));
}

// a plain link when reads are open; with a stored token, the download goes through fetch with the bearer header
function downloadLink(v) {
  const href = `/api/artifact-blobs/${v.digest}`, file = v.filename || `${v.name}-v${v.version}`;
  return el("a", { class: "download", href, download: file, text: v.digest.slice(0, 12), onclick: async ev => {
    const token = localStorage.getItem("iworkflow-token");
    if (!token) return;
    ev.preventDefault();
    const res = await fetch(href, { headers: { Authorization: "Bearer " + token } });
    if (!res.ok) { $("error").hidden = false; $("error").textContent = `download failed: HTTP ${res.status}`; return; }
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: file });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } });
}

async function renderArtifactNames() {
  const names = await api("/artifacts");
  $("crumbs").replaceChildren(el("a", { href: "#/", text: "workflows" }), " / artifacts");
  $("artifacts-view").replaceChildren(
    el("h1", { text: "Artifacts" }),
    names.length ? el("table", { id: "artifact-names" },
      el("thead", {}, el("tr", {}, ...["Name", "Latest", "Versions", "Tags", "Saved"].map(h => el("th", { text: h })))),
      el("tbody", {}, ...names.map(n => el("tr", { class: "clickable", "data-name": n.name,
          onclick: () => { location.hash = "#/artifacts/" + encodeURIComponent(n.name); } },
        el("td", { text: n.name }),
        el("td", { text: String(n.latest) }),
        el("td", { text: String(n.versions) }),
        el("td", { text: Object.entries(n.tags).map(([t, v]) => `${t} → ${v}`).join(", ") || "-" }),
        el("td", { text: fmtTime(n.updated_at) }))))
    ) : el("p", { id: "artifacts-empty", text: "No artifacts saved yet: iworkflow.artifacts.save(name, obj) in a job or driver." }));
}

async function renderArtifactVersions(name) {
  const data = await api(`/artifacts/${encodeURIComponent(name)}`);
  $("crumbs").replaceChildren(el("a", { href: "#/", text: "workflows" }), " / ",
    el("a", { href: "#/artifacts", text: "artifacts" }), " / " + name);
  const rows = data.versions.slice().reverse().map(v => el("tr", { class: "artifact-version", "data-version": String(v.version) },
    el("td", { text: String(v.version) }),
    el("td", { text: v.tags.join(", ") || "" }),
    el("td", { text: v.kind + (v.filename ? ` (${v.filename})` : "") }),
    el("td", { text: fmtSize(v.size) }),
    el("td", { class: "mono", title: v.digest }, downloadLink(v)),
    el("td", {}, el("pre", { class: "metadata", text: JSON.stringify(v.metadata, null, 1) })),
    el("td", {}, madeBy(v)),
    el("td", { text: fmtTime(v.lineage.created_at) })));
  $("artifacts-view").replaceChildren(
    el("h1", { text: name }),
    el("table", { id: "artifact-versions" },
      el("thead", {}, el("tr", {}, ...["Version", "Tags", "Kind", "Size", "Digest", "Metadata", "Made by", "Saved"]
        .map(h => el("th", { text: h })))),
      el("tbody", {}, ...rows)));
}

async function renderArtifacts(name) {
  if (name) await renderArtifactVersions(name); else await renderArtifactNames();
}
