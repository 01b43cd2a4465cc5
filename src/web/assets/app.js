// The console's script: four pages over the JSON API. No framework, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

async function api(url, options) {
  const r = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("not logged in");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function show(tab) {
  $$(".page").forEach((p) => p.classList.toggle("shown", p.id === tab));
  $$(".tab").forEach((b) => b.classList.toggle("on", b.dataset.tab === tab));
  if (tab === "health") health();
  if (tab === "activity") activity();
}

// What a figure shows: the value as the metrics file has it, or a dash.
function figure(v) {
  return v === null || v === undefined ? "—" : String(v);
}

function pick(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function when(unix) {
  if (unix === null || unix === undefined) return "never";
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function fillPairs(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = k;
    td.textContent = figure(v);
    tr.append(th, td);
    table.append(tr);
  }
}

async function health() {
  const h = await api("/api/health");
  window.jpHealth = h;
  $$("[data-metric]").forEach((td) => (td.textContent = figure(pick(h, td.dataset.metric))));
  $("#collector-state").textContent = h.collector.running ? "running" : "not running";
  $("#flush-last").textContent = when(h.flush.last_success_unix);
  $("#upload-last").textContent = h.upload.enabled ? when(h.upload.last_success_unix) : "not configured";
  fillPairs($("#suppressed"), Object.entries(h.collector.journald_suppressed));
  fillPairs($("#flush-errors"), Object.entries(h.flush.errors_total));
  const tbody = $("#hosts tbody");
  tbody.replaceChildren();
  for (const host of h.archive.hosts) {
    const tr = document.createElement("tr");
    for (const v of [host.host, host.files, host.bytes, when(host.oldest_usec / 1e6), when(host.newest_usec / 1e6)]) {
      const td = document.createElement("td");
      td.textContent = figure(v);
      tr.append(td);
    }
    tbody.append(tr);
  }
  const problems = $("#problems");
  problems.replaceChildren();
  for (const p of h.problems) {
    const div = document.createElement("div");
    div.className = "problem";
    const what = document.createElement("strong");
    what.textContent = p.what;
    const look = document.createElement("code");
    look.textContent = p.look_for;
    div.append(what, document.createTextNode(" — look at: "), look);
    problems.append(div);
  }
  const status = $("#status");
  status.textContent = h.problems.length ? h.problems.length + " need attention" : "healthy";
  status.className = h.problems.length ? "bad" : "good";
}

let range = "24h";
let by = "priority";
let plot = null;
const COLOURS = ["#c0392b", "#e67e22", "#f1c40f", "#27ae60", "#2980b9", "#8e44ad", "#7f8c8d", "#16a085", "#d35400", "#2c3e50"];

// Each page keeps only the answer to its latest request: a slower, older one arriving later
// must not replace it (a chart stacked by priority after "by host" was clicked).
const latest = { activity: 0, search: 0 };

async function activity() {
  const asked = ++latest.activity;
  $$(".range").forEach((b) => b.classList.toggle("on", b.dataset.range === range));
  $$(".by").forEach((b) => b.classList.toggle("on", b.dataset.by === by));
  const a = await api(`/api/activity?range=${range}&by=${by}`);
  if (asked !== latest.activity) return;
  window.jpActivity = a;
  const keys = Object.keys(a.series);
  $("#activity-note").textContent =
    `entries per ${a.bucket_minutes} min, stacked by ${by}` + (a.stale ? " (the summary misses some minutes: jp-flush --rebuild-summary)" : "");
  // Stacked: each series is drawn as the sum of itself and those below it.
  const data = [a.buckets];
  const sum = new Array(a.buckets.length).fill(0);
  for (const k of keys) {
    a.series[k].forEach((v, i) => (sum[i] += v));
    data.push(sum.slice());
  }
  const series = [{}].concat(
    keys.map((k, i) => ({
      label: k,
      stroke: COLOURS[i % COLOURS.length],
      fill: COLOURS[i % COLOURS.length] + "99",
      paths: uPlot.paths.bars({ size: [0.9, 100] }),
    }))
  ).reverse();
  const ordered = [data[0]].concat(data.slice(1).reverse());
  series.unshift(series.pop());
  if (plot) plot.destroy();
  const el = $("#chart");
  plot = new uPlot(
    { width: el.clientWidth || 900, height: 320, series, scales: { x: { time: true } }, legend: { live: false } },
    ordered,
    el
  );
  plot.over.addEventListener("click", () => {
    const i = plot.cursor.idx;
    if (i === null || i === undefined) return;
    const start = a.buckets[i];
    openSearch({ since: "@" + start, until: "@" + (start + a.bucket_minutes * 60) });
  });
}

let page = 0;

function searchParams() {
  const p = new URLSearchParams();
  for (const id of ["since", "until", "host", "unit", "identifier", "priority", "text", "mode"]) {
    const v = $("#" + id).value.trim();
    if (v) p.set(id, v);
  }
  if ($("#live").checked) p.set("live", "true");
  return p;
}

function openSearch(values) {
  for (const id of ["since", "until", "host", "unit", "identifier", "priority", "text"]) $("#" + id).value = values[id] || "";
  $("#mode").value = values.mode || "icase";
  $("#live").checked = values.live === "true";
  show("search");
  page = 0;
  search();
}

async function search() {
  const asked = ++latest.search;
  const p = searchParams();
  location.hash = "search?" + p.toString();
  $("#permalink").href = "/#search?" + p.toString();
  for (const f of ["csv", "json", "parquet"]) {
    const d = new URLSearchParams(p);
    d.set("format", f);
    $("#dl-" + f).href = "/api/download?" + d.toString();
  }
  p.set("page", page);
  $("#search-note").textContent = "searching…";
  const tbody = $("#results tbody");
  let r;
  try {
    r = await api("/api/search?" + p.toString());
  } catch (e) {
    if (asked !== latest.search) return;
    $("#search-note").textContent = e.message;
    tbody.replaceChildren();
    return;
  }
  if (asked !== latest.search) return;
  window.jpSearch = r;
  tbody.replaceChildren();
  for (const row of r.rows) {
    const [ts, time, host, ident, unit, prio, message, cursor] = row;
    const tr = document.createElement("tr");
    tr.className = "entry";
    tr.dataset.cursor = cursor;
    tr.dataset.ts = ts;
    for (const v of [time, host, ident, unit, prio, message]) {
      const td = document.createElement("td");
      td.textContent = figure(v);
      tr.append(td);
    }
    tr.addEventListener("click", () => entry(cursor, ts));
    tbody.append(tr);
  }
  $("#search-note").textContent = r.rows.length ? `${r.rows.length} entries, newest first` : "no entry matches";
  $("#page").textContent = "page " + (page + 1);
  $("#prev").disabled = page === 0;
  $("#next").disabled = !r.more;
}

async function entry(cursor, ts) {
  const e = await api(`/api/entry?cursor=${encodeURIComponent(cursor)}&ts=${ts}`);
  window.jpEntry = e;
  $("#entry").textContent = JSON.stringify(e, null, 2);
}

async function runSql() {
  $("#sql-error").textContent = "";
  const head = $("#sql-result thead");
  const body = $("#sql-result tbody");
  head.replaceChildren();
  body.replaceChildren();
  let r;
  try {
    r = await api("/api/sql", { method: "POST", body: $("#sql-text").value });
  } catch (e) {
    $("#sql-error").textContent = e.message;
    return;
  }
  window.jpSql = r;
  const tr = document.createElement("tr");
  for (const c of r.columns) {
    const th = document.createElement("th");
    th.textContent = c;
    tr.append(th);
  }
  head.append(tr);
  for (const row of r.rows) {
    const tr = document.createElement("tr");
    for (const v of row) {
      const td = document.createElement("td");
      td.textContent = figure(v);
      tr.append(td);
    }
    body.append(tr);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $$(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
  $$(".range").forEach((b) => b.addEventListener("click", () => { range = b.dataset.range; activity(); }));
  $$(".by").forEach((b) => b.addEventListener("click", () => { by = b.dataset.by; activity(); }));
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); page = 0; search(); });
  $("#prev").addEventListener("click", () => { page = Math.max(0, page - 1); search(); });
  $("#next").addEventListener("click", () => { page += 1; search(); });
  $("#sql-go").addEventListener("click", runSql);
  const hash = location.hash.slice(1);
  if (hash.startsWith("search?")) {
    openSearch(Object.fromEntries(new URLSearchParams(hash.slice(7))));
  } else {
    show(["health", "activity", "search", "sql"].includes(hash) ? hash : "health");
  }
});
