// Flywheel dashboard: reads /admin/api/* (same-origin, session cookie) and draws with the
// vendored Chart.js. Money arrives as exact decimal strings; tables show them as sent and
// charts convert to numbers only to draw.
"use strict";

window.__flywheelErrors = [];
window.addEventListener("error", (e) => window.__flywheelErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) =>
  window.__flywheelErrors.push(String(e.reason && e.reason.message ? e.reason.message : e.reason)));

const charts = {};
let me = null;

const COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function usd(value) {
  const n = Number(value);
  if (!isFinite(n)) return "–";
  const digits = Math.abs(n) >= 1 || n === 0 ? 2 : 6;
  return (n < 0 ? "-$" : "$") + Math.abs(n).toLocaleString("en-US",
    { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)}%`;
}

function filterQuery(extra = {}) {
  const form = new FormData(document.getElementById("filters"));
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v) params.append(k, v);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params.toString();
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

// --- tables ---------------------------------------------------------------------------

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;
const NUMERIC = /(_usd|_pct|requests|tokens|audits|examples|steps|seconds|loss|agreement|lower|size|rows)$/;

function table(title, rows, csvHref, columns) {
  const card = el("div", { class: "table-card" });
  const head = el("h2", {}, title);
  if (csvHref) head.append(el("a", { class: "csv", href: csvHref, download: "" }, "CSV"));
  card.append(head);
  if (!rows.length) {
    card.append(el("div", { class: "empty" }, "Nothing in this range yet."));
    return card;
  }
  columns = columns || Object.keys(rows[0]);
  const t = el("table");
  t.append(el("tr", {}, ...columns.map((c) => el("th", {}, c.replaceAll("_", " ")))));
  for (const r of rows) {
    t.append(el("tr", {}, ...columns.map((c) => {
      const v = r[c];
      let text = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      // Timestamps read as "2026-11-21 12:13:59" (UTC, like the page); the CSV keeps them whole.
      if (ISO.test(text)) text = text.slice(0, 19).replace("T", " ").replace(" 00:00:00", "");
      return el("td", { class: NUMERIC.test(c) ? "num" : "" }, text);
    })));
  }
  card.append(t);
  return card;
}

// --- finance --------------------------------------------------------------------------

function kpi(label, value, sub, cls = "") {
  return el("div", { class: "kpi" }, el("div", { class: "label" }, label),
    el("div", { class: `value ${cls}` }, value), el("div", { class: "sub" }, sub || ""));
}

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
  charts[id] = new Chart(document.getElementById(id), config);
}

async function loadFinance() {
  const split = document.getElementById("split").value;
  const q = filterQuery({ split });
  const r = await api(`/admin/api/finance?${q}`);
  const t = r.totals, p = r.projection;
  const audited = r.quality.filter((x) => x.audits > 0);
  const auditPct = audited.length
    ? audited.reduce((s, x) => s + Number(x.audit_agreement_pct) * x.audits, 0) / audited.reduce((s, x) => s + x.audits, 0)
    : null;
  const savingsClass = Number(t.savings_usd) >= 0 ? "good" : "bad";
  document.getElementById("kpis").replaceChildren(
    kpi("Spend", usd(t.spend_usd), `${t.requests.toLocaleString()} calls · overhead ${usd(t.overhead_usd)}`),
    kpi("Teacher baseline", usd(t.baseline_usd), `${t.user_requests.toLocaleString()} user requests`),
    kpi("Savings", usd(t.savings_usd), pct(t.savings_pct) + " of baseline", savingsClass),
    kpi("Served by students", pct(t.student_share_pct), `${t.student_requests.toLocaleString()} requests`),
    kpi("Audit agreement", pct(auditPct), `${audited.reduce((s, x) => s + x.audits, 0)} teacher audits`),
    kpi(`Projected ${p.month} spend`, usd(p.projected_spend_usd), `month to date ${usd(p.month_to_date_spend_usd)}`),
    kpi(`Projected ${p.month} savings`, usd(p.projected_savings_usd),
      `at the last ${Number(p.rate_window_hours).toFixed(0)} h rate`),
  );

  const labels = r.series.map((s) => r.bucket === "hour" ? s.bucket.slice(5, 16).replace("T", " ") : s.bucket.slice(0, 10));
  draw("chart-spend", {
    type: "line",
    data: { labels, datasets: [
      { label: "Spend", data: r.series.map((s) => Number(s.spend_usd)), borderColor: COLORS[0], backgroundColor: COLORS[0] },
      { label: "Teacher baseline", data: r.series.map((s) => Number(s.baseline_usd)), borderColor: COLORS[3], backgroundColor: COLORS[3], borderDash: [6, 4] },
      { label: "Savings", data: r.series.map((s) => Number(s.savings_usd)), borderColor: COLORS[1], backgroundColor: COLORS[1] },
    ] },
    options: { scales: { y: { ticks: { callback: (v) => usd(v) } } } },
  });
  const keys = [...new Set(r.series_split.map((s) => s[split]))];
  const bucketOf = (b) => r.bucket === "hour" ? b.slice(5, 16).replace("T", " ") : b.slice(0, 10);
  draw("chart-split", {
    type: "bar",
    data: { labels, datasets: keys.map((k, i) => ({
      label: k || "(none)",
      backgroundColor: COLORS[i % COLORS.length],
      data: labels.map((lb) => r.series_split
        .filter((s) => s[split] === k && bucketOf(s.bucket) === lb)
        .reduce((n, s) => n + Number(s.spend_usd), 0)),
    })) },
    options: { scales: { x: { stacked: true }, y: { stacked: true, ticks: { callback: (v) => usd(v) } } } },
  });
    draw("chart-share", {
    type: "line",
    data: { labels, datasets: [{ label: "Student share", data: r.series.map((s) => s.student_share_pct === null ? 0 : Number(s.student_share_pct)), borderColor: COLORS[4], backgroundColor: COLORS[4], fill: false }] },
    options: { scales: { y: { min: 0, max: 100 } } },
  });
  draw("chart-apps", {
    type: "bar",
    data: { labels: r.by_app.map((a) => a.app || "(none)"), datasets: [
      { label: "Spend", data: r.by_app.map((a) => Number(a.spend_usd)), backgroundColor: COLORS[0] },
      { label: "Savings", data: r.by_app.map((a) => Number(a.savings_usd)), backgroundColor: COLORS[1] },
    ] },
  });
  draw("chart-models", {
    type: "doughnut",
    data: { labels: r.by_model.map((m) => m.model || "(none)"), datasets: [{ data: r.by_model.map((m) => Number(m.spend_usd)), backgroundColor: COLORS }] },
  });
  draw("chart-quality", {
    type: "bar",
    data: { labels: r.quality.map((x) => `${x.route}/${x.candidate}`), datasets: [
      { label: "Audit agreement %", data: r.quality.map((x) => x.audit_agreement_pct === null ? 0 : Number(x.audit_agreement_pct)), backgroundColor: COLORS[2] },
      { label: "Eval agreement %", data: r.quality.map((x) => x.eval_agreement_pct === null ? 0 : Number(x.eval_agreement_pct)), backgroundColor: COLORS[5] },
    ] },
    options: { scales: { y: { min: 0, max: 100 } } },
  });

  const csv = (name) => `/admin/api/finance?${filterQuery({ split, format: "csv", table: name })}`;
  const budgets = (await api("/admin/api/budgets")).budgets;
  const money = ["requests", "user_requests", "student_requests", "student_share_pct", "spend_usd", "baseline_usd", "savings_usd", "savings_pct", "overhead_usd", "input_tokens", "output_tokens"];
  document.getElementById("finance-tables").replaceChildren(
    ...(budgets.length ? [table("Budgets (this period)", budgets, "/admin/api/budgets?format=csv&table=budgets",
      ["name", "scope", "period", "kind", "limit_usd", "spent_usd", "held_usd", "remaining_usd", "resets_at", "exhausted_at"])] : []),
    table("Quality next to savings", r.quality, csv("quality")),
    table("By app", r.by_app, csv("by_app"), ["app", ...money]),
    table("By team", r.by_team, csv("by_team"), ["team", ...money]),
    table("By model", r.by_model, csv("by_model"), ["model", ...money]),
    table("By route", r.by_route, csv("by_route"), ["route", ...money]),
    table("By lever (who answered: student, few_shot, cache, teacher)", r.by_lever, csv("by_lever"), ["lever", ...money]),
    // Empty buckets stay in the charts and the CSV; the table lists the ones with traffic.
    table(`Over time (per ${r.bucket})`, r.series.filter((s) => s.requests > 0), csv("series"), ["bucket", ...money]),
    table(`Over time by ${split} (per ${r.bucket})`, r.series_split, csv("series_split"), ["bucket", split, ...money]),
  );
  document.body.dataset.charts = String(Object.keys(charts).length);
}

// --- admin views ----------------------------------------------------------------------

async function loadRoutes() {
  const r = await api("/admin/api/routes");
  const pol = r.policy;
  document.getElementById("view-routes").replaceChildren(
    el("p", {}, `Serving policy version ${pol.serving_version}`,
      pol.status === "error" ? el("span", { class: "bad" }, ` · last edit rejected, previous policy serving: ${pol.last_error}`) : ""),
    table("Routes, in matching order", r.routes, "/admin/api/routes?format=csv&table=routes"),
  );
}

async function loadCandidates() {
  const r = await api("/admin/api/candidates");
  document.getElementById("view-candidates").replaceChildren(
    table("Candidates: state, training and latest evaluation", r.candidates, "/admin/api/candidates?format=csv&table=candidates"),
    table("Coverage against agreement: the share each candidate's latest run keeps at a confidence threshold, on eval rows that certified it (never used to choose its threshold)", r.coverage_curves, "/admin/api/candidates?format=csv&table=coverage_curves"),
    table("Training runs, live (step, loss and tokens/s while they run; failed attempts with their reason)", r.runs, "/admin/api/candidates?format=csv&table=runs",
      ["route", "candidate", "run_id", "backend", "attempt", "status", "stage", "step", "total_steps", "progress_pct", "loss", "tokens_per_s", "error", "updated_at"]),
  );
  return r.candidates;
}

async function loadHistory() {
  const r = await api(`/admin/api/history?${filterQuery()}`);
  document.getElementById("view-history").replaceChildren(
    table("Promotions, rollbacks and flags (newest first)", r.events, `/admin/api/history?${filterQuery({ format: "csv", table: "events" })}`,
      ["at", "route", "candidate", "kind", "from_state", "to_state", "reason", "evidence"]),
  );
}

async function loadLineage() {
  const view = document.getElementById("view-lineage");
  const cands = (await api("/admin/api/candidates")).candidates;
  const select = el("select", {}, ...cands.map((c) => el("option", { value: `${c.route}|${c.candidate}` }, `${c.route} / ${c.candidate} (${c.state})`)));
  const out = el("div");
  const show = async () => {
    if (!select.value) return;
    const [route, candidate] = select.value.split("|");
    const q = new URLSearchParams({ route, candidate });
    const r = await api(`/admin/api/lineage?${q}`);
    const csv = (name) => `/admin/api/lineage?${q}&format=csv&table=${name}`;
    out.replaceChildren(
      table("Training runs", r.runs, csv("runs")),
      table("Datasets", r.datasets, csv("datasets")),
      table("Dataset make-up (split, answer source)", r.makeup, csv("makeup")),
      table("Requests of the latest dataset (CSV has all)", r.items, csv("items")),
    );
  };
  select.addEventListener("change", show);
  view.replaceChildren(el("p", {}, "Trace a model: ", select), out);
  if (!cands.length) out.append(el("p", { class: "empty" }, "No candidates trained yet."));
  await show();
}

async function loadGuardrails() {
  const r = await api(`/admin/api/guardrails?${filterQuery()}`);
  const keys = [...new Set(r.series.map((s) => `${s.route} / ${s.rail} (${s.action})`))];
  const buckets = [...new Set(r.series.map((s) => s.bucket))];
  draw("chart-guardrails", {
    type: "line",
    data: { labels: buckets.map((b) => b.slice(0, r.bucket === "hour" ? 13 : 10)), datasets: keys.map((k, i) => ({
      label: k,
      data: buckets.map((b) => {
        const s = r.series.find((x) => x.bucket === b && `${x.route} / ${x.rail} (${x.action})` === k);
        return s && s.hit_pct !== null ? Number(s.hit_pct) : null;
      }),
      borderColor: COLORS[i % COLORS.length], spanGaps: true,
    })) },
  });
  const csv = (name) => `/admin/api/guardrails?${filterQuery({ format: "csv", table: name })}`;
  document.getElementById("guardrails-tables").replaceChildren(
    el("p", { class: "note" }, "Rails belong to routes: the app and team filters do not narrow these figures."),
    table("Rates by route and rail", r.by_rail, csv("by_rail"), ["route", "rail", "direction", "action", "checks", "hits", "hit_pct"]),
    table("What fired (rule or detector)", r.by_rule, csv("by_rule")),
    table("Prompt-attack detectors serving now", r.detectors, csv("detectors")),
    table(`Over time (per ${r.bucket})`, r.series.filter((s) => s.checks > 0), csv("series")),
  );
}

// --- review ---------------------------------------------------------------------------

async function label(item, choice, answer = "") {
  await api("/admin/api/review/labels", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ request_id: item.request_id, choice, answer }),
  });
  await loadReview();
}

function guardrailCard(item, prompt) {
  return el("div", { class: "review-item", "data-request-id": item.request_id },
    el("div", {}, el("span", { class: "pill" }, "guardrail"), ` ${item.route} · ${item.app} · ${item.detail} · ${item.at}`),
    el("pre", { class: "prompt" }, prompt),
    el("div", {}, el("strong", {}, "Answer given"), el("pre", {}, item.teacher_answer)),
    el("div", { class: "actions" },
      el("button", { onclick: () => label(item, "attack") }, "Attack"),
      el("button", { onclick: () => label(item, "not_attack") }, "Not an attack"),
      el("button", { class: "secondary", onclick: () => label(item, "exclude") }, "Exclude from training")),
  );
}

function reviewCard(item) {
  const prompt = item.messages.map((m) => `${m.role}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}`).join("\n");
  if (item.source === "guardrail") return guardrailCard(item, prompt);
  const correction = el("textarea", { placeholder: "Or write the correct answer…" });
  const why = item.source === "audit" ? `audit agreement ${item.score}` : `student confidence ${item.score}`;
  return el("div", { class: "review-item", "data-request-id": item.request_id },
    el("div", {}, el("span", { class: "pill" }, item.source), ` ${item.route} / ${item.candidate} · ${item.app} · ${why} · ${item.at}`),
    el("pre", { class: "prompt" }, prompt),
    el("div", { class: "answers" },
      el("div", {}, el("strong", {}, "Student"), el("pre", {}, item.student_answer)),
      el("div", {}, el("strong", {}, "Teacher"), el("pre", {}, item.teacher_answer))),
    correction,
    el("div", { class: "actions" },
      el("button", { onclick: () => label(item, "student") }, "Student is right"),
      el("button", { onclick: () => label(item, "teacher") }, "Teacher is right"),
      el("button", { onclick: () => correction.value.trim() && label(item, "correction", correction.value) }, "Save correction"),
      el("button", { class: "secondary", onclick: () => label(item, "exclude") }, "Exclude from training")),
  );
}

async function loadReview() {
  const r = await api(`/admin/api/review?${filterQuery()}`);
  const view = document.getElementById("view-review");
  view.replaceChildren(
    el("p", {}, `${r.queue.length} item(s) to review: audit disagreements, the student's least confident answers, then requests a guardrail flagged. A label replaces the teacher's answer in the next dataset and eval set; an attack / not-an-attack label retrains the prompt-attack detector.`),
    ...r.queue.map(reviewCard),
    table("Recent labels", r.labels, `/admin/api/review?${filterQuery({ format: "csv", table: "labels" })}`),
  );
}

// --- shell ----------------------------------------------------------------------------

const LOADERS = { finance: loadFinance, routes: loadRoutes, candidates: loadCandidates, history: loadHistory, lineage: loadLineage, guardrails: loadGuardrails, review: loadReview };
let current = null;

async function show(name) {
  current = name;
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === `view-${name}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  try {
    await LOADERS[name]();
  } catch (e) {
    document.getElementById(`view-${name}`).prepend(el("p", { class: "error" }, `Could not load: ${e.message}`));
    throw e;
  }
}

function defaultDates() {
  const form = document.getElementById("filters");
  const today = new Date();
  const from = new Date(today.getTime() - 29 * 86400000);
  form.elements.to.value = today.toISOString().slice(0, 10);
  form.elements.from.value = from.toISOString().slice(0, 10);
}

async function main() {
  me = await api("/admin/api/me");
  document.getElementById("who").textContent = `${me.key_id} (${me.role})`;
  const form = document.getElementById("filters");
  for (const a of me.apps) form.elements.app.append(el("option", { value: a }, a));
  for (const t of me.teams) form.elements.team.append(el("option", { value: t }, t));
  defaultDates();
  const nav = document.getElementById("tabs");
  const views = [...document.querySelectorAll(".view")].filter((v) => v.dataset.roles.split(" ").includes(me.role));
  for (const v of views) {
    const name = v.id.slice(5);
    nav.append(el("a", { "data-view": name, onclick: () => show(name) }, v.dataset.title));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); show(current); });
  document.getElementById("split").addEventListener("change", () => show("finance"));
  await show(views[0].id.slice(5));
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  window.__flywheelErrors.push(String(e.message || e));
  document.body.dataset.ready = "error";
});
