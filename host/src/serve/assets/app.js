// The control room. Everything shown comes from the JSON API; text that
// a variant may have written (summaries, reasons, notes, audit details)
// goes into the page through textContent only — never innerHTML.
"use strict";

const state = { runs: new Map(), selectedRun: null, selectedVariant: null, auditBefore: null, lineageTimer: null };

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k.startsWith("data-") || k === "title" || k === "id" || k === "type") e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.replace("/"); throw new Error("the access token is required"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function post(path) {
  const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "X-Vivarium-Action": "1" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function score(x) { return x === null || x === undefined ? "–" : Number(x).toFixed(3); }
function short(id) { return id ? String(id).slice(0, 12) : ""; }

function flash(msg) {
  const f = el("div", { class: "flash" }, msg);
  document.body.append(f);
  setTimeout(() => f.remove(), 6000);
}

// ---- runs ------------------------------------------------------------------

async function loadRuns() {
  const runs = await api("/api/runs");
  state.runs = new Map(runs.map((r) => [r.id, r]));
  renderRuns();
  if (!state.selectedRun && runs.length) selectRun(runs[0].id);
}

function renderRuns() {
  const body = document.querySelector("#runs tbody");
  body.replaceChildren();
  for (const r of state.runs.values()) {
    const gen = r.generation.total === null ? String(r.generation.done) : r.generation.done + " / " + r.generation.total;
    const stop = r.state === "running"
      ? el("button", { class: "danger stop", "data-run": r.id, on: { click: (e) => { e.stopPropagation(); stopRun(r.id); } } },
          r.stop_requested ? "stopping…" : "Stop")
      : null;
    const row = el("tr", { "data-run": r.id, class: r.id === state.selectedRun ? "selected" : "", on: { click: () => selectRun(r.id) } },
      el("td", {}, r.id),
      el("td", {}, el("span", { class: "state " + r.state, "data-state": r.state }, r.state)),
      el("td", {}, gen),
      el("td", {}, String(r.variants)),
      el("td", {}, score(r.best && r.best.visible)),
      el("td", {}, score(r.best && r.best.held_out)),
      el("td", {}, stop));
    body.append(row);
  }
  document.getElementById("runs-empty").hidden = state.runs.size > 0;
  if (state.selectedRun && state.runs.has(state.selectedRun)) renderRunHeader(state.runs.get(state.selectedRun));
}

function renderRunHeader(r) {
  document.getElementById("run-title").textContent = r.id;
  const st = document.getElementById("run-state");
  st.textContent = r.state;
  st.className = "state " + r.state;
  st.setAttribute("data-state", r.state);
  const box = document.getElementById("budgets");
  box.replaceChildren();
  const bars = [];
  if (r.generation.total) bars.push({ name: "generations", spent: r.generation.done, limit: r.generation.total, unit: "" });
  if (r.steps.total) {
    const failed = r.steps.refused + r.steps.guest_failed + r.steps.no_parent;
    bars.push({ name: "steps", spent: r.steps.done, limit: r.steps.total, unit: failed ? "(" + failed + " not archived)" : "" });
  }
  for (const b of r.budgets) bars.push(b);
  for (const b of bars) {
    const spent = b.spent === null || b.spent === undefined ? null : Number(b.spent);
    const frac = spent === null || !b.limit ? 0 : Math.min(1, spent / Number(b.limit));
    const label = (spent === null ? "not recorded" : fmt(spent)) + " of " + fmt(b.limit) + (b.unit ? " " + b.unit : "");
    const bar = el("div", { class: "bar" }, el("div", { class: "fill" + (frac >= 1 ? " full" : "") }));
    bar.firstChild.style.width = (frac * 100).toFixed(1) + "%";
    box.append(el("div", { class: "budget", "data-budget": b.name }, el("span", { class: "name" }, b.name), bar, el("span", { class: "label" }, label)));
  }
}

function fmt(x) {
  const n = Number(x);
  if (!isFinite(n)) return String(x);
  for (const [k, s] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e4, "k"]]) if (Math.abs(n) >= k) return (n / k).toFixed(1) + s;
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

async function stopRun(id) {
  try { await post("/api/runs/" + encodeURIComponent(id) + "/stop"); flash("Asked run " + id + " to stop; it ends before its next step."); }
  catch (e) { flash("Stop refused: " + e.message); }
  loadRuns();
}

async function selectRun(id) {
  state.selectedRun = id;
  document.getElementById("run-panel").hidden = false;
  renderRuns();
  await loadLineage();
}

// ---- lineage ---------------------------------------------------------------

function colour(s) {
  if (s === null || s === undefined) return "#999";
  const t = Math.max(0, Math.min(1, Number(s)));
  return "hsl(" + Math.round(t * 120) + ", 65%, 45%)";
}

async function loadLineage() {
  if (!state.selectedRun) return;
  const run = state.selectedRun;
  const l = await api("/api/runs/" + encodeURIComponent(run) + "/lineage");
  if (run !== state.selectedRun) return;
  renderLineage(l.variants);
}

function scheduleLineage() {
  clearTimeout(state.lineageTimer);
  state.lineageTimer = setTimeout(() => loadLineage().catch((e) => flash(e.message)), 300);
}

function renderLineage(variants) {
  const g = document.getElementById("lineage");
  g.replaceChildren();
  const byGen = new Map();
  for (const v of variants) {
    if (!byGen.has(v.generation)) byGen.set(v.generation, []);
    byGen.get(v.generation).push(v);
  }
  const pos = new Map();
  const dx = 70, dy = 34, r = 11;
  let maxRow = 0;
  for (const [gen, vs] of byGen) {
    vs.forEach((v, i) => pos.set(v.id, { x: 30 + gen * dx, y: 24 + i * dy }));
    maxRow = Math.max(maxRow, vs.length);
  }
  const maxGen = Math.max(0, ...byGen.keys());
  g.setAttribute("width", 60 + maxGen * dx + 40);
  g.setAttribute("height", 30 + maxRow * dy);
  for (const v of variants) {
    if (v.parent && pos.has(v.parent)) {
      const a = pos.get(v.parent), b = pos.get(v.id);
      g.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "edge" }));
    }
  }
  for (const v of variants) {
    const p = pos.get(v.id);
    const gap = v.visible !== null && v.held_out !== null ? v.visible - v.held_out : 0;
    const node = svg("g", { class: "node " + v.status + (v.id === state.selectedVariant ? " selected" : ""), "data-variant": v.id, transform: "translate(" + p.x + "," + p.y + ")" });
    node.append(svg("circle", { r, fill: colour(v.visible), stroke: gap > 0.2 ? "#d33" : "#333", "stroke-width": gap > 0.2 ? 3 : 1 }));
    const label = svg("text", { x: 0, y: 4, "text-anchor": "middle" });
    label.textContent = v.visible === null ? "·" : Math.round(v.visible * 100);
    node.append(label);
    const title = svg("title");
    title.textContent = short(v.id) + " gen " + v.generation + " · " + v.status + " · visible " + score(v.visible) + " · held-out " + score(v.held_out) + "\n" + v.summary;
    node.append(title);
    node.addEventListener("click", () => loadVariant(v.id));
    g.append(node);
  }
}

// ---- a variant ------------------------------------------------------------

async function loadVariant(id) {
  state.selectedVariant = id;
  const d = await api("/api/variants/" + encodeURIComponent(id));
  const v = d.variant;
  document.getElementById("variant-panel").hidden = false;
  document.getElementById("variant-title").textContent = v.id;
  const facts = document.getElementById("variant-facts");
  facts.replaceChildren();
  const fact = (k, val) => facts.append(el("dt", {}, k), el("dd", {}, val));
  fact("run", v.run_id);
  fact("parent", v.parent || "(initial)");
  fact("generation", String(v.generation));
  fact("status", v.status);
  fact("visible score", score(v.visible_score));
  fact("held-out score", score(v.held_out_score));
  fact("summary", v.summary);
  fact("component", v.component_sha || "(not built)");
  const grant = document.getElementById("variant-grant");
  grant.replaceChildren();
  if (d.grant) {
    for (const line of d.grant.provenance) grant.append(el("li", {}, line));
    for (const den of d.grant.denials) grant.append(el("li", { class: "denied" }, den));
  } else grant.append(el("li", { class: "muted" }, "no grant recorded"));
  const diff = document.getElementById("variant-diff");
  diff.replaceChildren();
  if (!d.diff.length) diff.append(el("p", { class: "muted" }, v.parent ? "same tree as its parent" : "an initial variant"));
  for (const f of d.diff) {
    const pre = el("pre", { class: "diff" });
    for (const line of (f.diff || "(binary or too large: " + f.bytes[0] + " → " + f.bytes[1] + " bytes)").split("\n")) {
      const cls = line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : "";
      pre.append(el("span", { class: cls }, line + "\n"));
    }
    diff.append(el("details", {}, el("summary", {}, f.change + " " + f.path), pre));
  }
  const res = document.querySelector("#variant-results tbody");
  res.replaceChildren();
  for (const t of d.results) res.append(el("tr", {}, el("td", {}, t.task_id), el("td", {}, t.split), el("td", {}, t.passed ? "yes" : "no"), el("td", {}, score(t.score)), el("td", {}, t.note)));
  const au = document.getElementById("variant-audit");
  au.replaceChildren();
  for (const r of d.audit) au.append(auditItem(r));
  loadLineage().catch(() => {});
}

// ---- approvals -------------------------------------------------------------

async function loadApprovals() {
  const a = await api("/api/approvals");
  const list = document.getElementById("approvals");
  list.replaceChildren();
  document.getElementById("pending-count").textContent = String(a.pending.length);
  document.getElementById("approvals-empty").hidden = a.pending.length > 0;
  for (const r of a.pending) {
    const lines = (title, xs, cls) => el("div", { class: cls || "" }, el("strong", {}, title), el("ul", {}, ...xs.map((x) => el("li", {}, x))));
    const li = el("li", { class: "request", "data-request": r.id },
      el("div", {}, el("code", {}, r.id), " · parent ", el("code", {}, short(r.parent_variant)), " · ", r.created_at),
      el("blockquote", {}, r.reason),
      lines("Exceeds the parent:", r.exceeding),
      lines("Grants if approved (exactly):", r.grants_if_approved),
      r.denied.length ? lines("Denied by the policy (never granted):", r.denied, "denied") : null,
      el("div", { class: "actions" },
        el("button", { class: "approve", "data-request": r.id, on: { click: () => decide(r.id, "approve") } }, "Approve"),
        el("button", { class: "deny danger", "data-request": r.id, on: { click: () => decide(r.id, "deny") } }, "Deny")));
    list.append(li);
  }
}

async function decide(id, what) {
  try { const r = await post("/api/approvals/" + encodeURIComponent(id) + "/" + what); flash("Request " + id + " " + r.status + "."); }
  catch (e) { flash("Refused: " + e.message); }
  loadApprovals();
}

// ---- audit -----------------------------------------------------------------

function auditItem(r) {
  const details = r.details === undefined ? null : el("details", {}, el("summary", {}, "details"), el("pre", {}, JSON.stringify(r.details, null, 2)));
  return el("li", { "data-seq": r.seq }, el("span", { class: "seq" }, "#" + r.seq), " ", r.time, " ", el("strong", {}, r.event), " ", r.variant ? el("code", {}, short(r.variant)) : "host", details);
}

async function loadAudit(more) {
  const q = more && state.auditBefore !== null ? "?limit=50&before=" + state.auditBefore : "?limit=50";
  const a = await api("/api/audit" + q);
  const list = document.getElementById("audit");
  if (!more) list.replaceChildren();
  for (const r of a.records) list.append(auditItem(r));
  state.auditBefore = a.next_before;
  document.getElementById("audit-more").hidden = a.next_before === null;
}

// ---- live ------------------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", (e) => {
    live.textContent = "● live";
    live.className = "live on";
    document.getElementById("actor").textContent = "acting as " + JSON.parse(e.data).actor;
  });
  es.addEventListener("run", (e) => {
    const r = JSON.parse(e.data);
    state.runs.set(r.id, r);
    renderRuns();
    if (!state.selectedRun) selectRun(r.id);
  });
  es.addEventListener("variant", (e) => {
    const v = JSON.parse(e.data);
    if (v.run === state.selectedRun) scheduleLineage();
  });
  es.addEventListener("approvals", () => loadApprovals().catch((e) => flash(e.message)));
  es.addEventListener("audit", (e) => {
    const list = document.getElementById("audit");
    list.prepend(auditItem(JSON.parse(e.data)));
    while (list.children.length > 500) list.lastChild.remove();
  });
  es.addEventListener("resync", () => loadAll());
  es.onerror = () => { live.textContent = "○ reconnecting"; live.className = "live off"; };
}

function loadAll() {
  return Promise.all([loadRuns(), loadApprovals(), loadAudit(false)]).catch((e) => flash(e.message));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("stop-all").addEventListener("click", async () => {
    try { const r = await post("/api/stop-all"); flash("Asked to stop: " + (r.stopping.join(", ") || "no run is running")); }
    catch (e) { flash("Stop refused: " + e.message); }
    loadRuns();
  });
  document.getElementById("audit-more").addEventListener("click", () => loadAudit(true));
  loadAll();
  connect();
});
