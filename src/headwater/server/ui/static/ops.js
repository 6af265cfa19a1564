/* headwater's operations pages: Triggers, Workers (live tables), Dead letters (inspect,
   replay), Overview (charts drawn as inline SVG from /api/overview). Loaded after
   headwater.js, whose HW.api and HW.fragment it uses. Data is set with textContent or
   SVG attributes, never parsed as HTML; table rows arrive rendered (and escaped) by the
   server's templates. */
"use strict";

const OPS = {};

/* A table whose body the server re-renders over SSE (``rows`` events). */
OPS.liveTable = function (table) {
  const url = table.dataset.stream;
  const live = document.getElementById("live");
  if (!url) return;
  const source = new EventSource(url);
  source.addEventListener("open", () => live && live.classList.add("on"));
  source.addEventListener("error", () => live && live.classList.remove("on"));
  source.addEventListener("rows", (ev) => {
    table.tBodies[0].replaceChildren(HW.fragment(ev.data));
  });
};

/* ---------- Triggers ---------- */
OPS.triggers = function () {
  const table = document.getElementById("triggers");
  const result = document.getElementById("action-result");
  OPS.liveTable(table);
  const done = { restart: "restarted", release: "released", pause: "disabled", resume: "enabled" };
  table.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-trigger-action]");
    if (!button || button.disabled) return;
    const action = button.dataset.triggerAction;
    const name = button.dataset.name;
    button.disabled = true;
    const res = await HW.api("POST", "/api/triggers/" + encodeURIComponent(name) + "/" + action);
    result.textContent = res.ok ? name + " " + done[action] : name + ": " + HW.errorText(res);
    result.classList.toggle("error", !res.ok);
  });
};

/* ---------- Dead letters ---------- */
OPS.deadLetters = function () {
  const table = document.getElementById("dead-letters");
  const body = table.tBodies[0];
  const picked = document.getElementById("picked");
  const replayBtn = document.getElementById("replay-selected");
  const result = document.getElementById("replay-result");
  const all = document.getElementById("pick-all");

  function selected() {
    return Array.from(body.querySelectorAll("input.pick:checked")).map((b) => Number(b.value));
  }
  function refresh() {
    const n = selected().length;
    picked.textContent = n + " selected";
    replayBtn.disabled = n === 0;
  }
  body.addEventListener("change", refresh);
  all.addEventListener("change", () => {
    body.querySelectorAll("input.pick").forEach((b) => { b.checked = all.checked; });
    refresh();
  });

  /* Mark each replayed row with its new job; say what happened to the others. */
  function show(outcomes, where) {
    const counts = {};
    const problems = [];
    for (const o of outcomes) {
      counts[o.status] = (counts[o.status] || 0) + 1;
      const row = document.getElementById("dl-" + o.id);
      if (o.job_id && row) {
        const cell = row.querySelector("td.replay");
        const link = document.createElement("a");
        link.className = "mono";
        link.href = "/jobs/" + o.job_id;
        link.textContent = o.job_id.slice(-8);
        cell.replaceChildren(link);
        const box = row.querySelector("input.pick");
        if (box) box.remove();
        const detail = document.querySelector('tr.dl-detail[data-for="' + o.id + '"] .replay-one');
        if (detail) detail.disabled = true;
      }
      if (o.status === "still_invalid" || o.status === "not_found") {
        problems.push(o.id + ": " + (o.reason || o.status));
      }
    }
    const parts = [];
    if (counts.created) parts.push(counts.created + " replayed");
    if (counts.already_replayed) parts.push(counts.already_replayed + " already replayed");
    where.textContent = parts.join(", ") + (problems.length ? (parts.length ? "; " : "") + "still invalid: " + problems.join("; ") : "");
    where.classList.toggle("error", problems.length > 0);
    all.checked = false;
    refresh();
  }

  replayBtn.addEventListener("click", async () => {
    const ids = selected();
    if (!ids.length) return;
    replayBtn.disabled = true;
    const res = await HW.api("POST", "/api/dead-letters/replay", { ids });
    if (!res.ok) { result.textContent = HW.errorText(res); result.classList.add("error"); refresh(); return; }
    show(res.data, result);
  });

  body.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.replay-one");
    if (!button || button.disabled) return;
    const panel = button.closest("td");
    const area = panel.querySelector("textarea.payload");
    const status = panel.querySelector(".replay-one-result");
    const body = { ids: [Number(button.dataset.id)] };
    // Only an edited payload is sent: the shown one is redacted, the stored one is not.
    let edited;
    try {
      edited = JSON.parse(area.value);
    } catch (e) {
      status.textContent = "the payload is not valid JSON";
      status.classList.add("error");
      return;
    }
    if (JSON.stringify(edited) !== JSON.stringify(JSON.parse(area.dataset.original))) {
      if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
        status.textContent = "the payload must be a JSON object";
        status.classList.add("error");
        return;
      }
      body.input = edited;
    }
    const res = await HW.api("POST", "/api/dead-letters/replay", body);
    if (!res.ok) { status.textContent = HW.errorText(res); status.classList.add("error"); return; }
    show(res.data, status);
  });
};

/* ---------- Overview ---------- */
const SVGNS = "http://www.w3.org/2000/svg";
/* Stacking order, bottom up: finished first, then what is still on its way. */
const STATUS_ORDER = ["completed", "failed", "cancelled", "running", "suspended", "pending"];

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/* The axis top: four whole, round steps (1, 2 or 5 times a power of ten each). */
function niceMax(value) {
  const raw = Math.max(1, value / 4);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return 4 * step;
}

function hhmm(iso) { return iso.slice(11, 16); }

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  const s = Math.round(ms / 1000);
  return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
}

OPS.throughput = function (box, legend, data) {
  const W = 960, H = 220, L = 40, R = 8, T = 8, B = 22;
  const buckets = data.buckets;
  const statuses = STATUS_ORDER.filter((s) => buckets.some((b) => b.counts[s]))
    .concat(Object.keys(data.totals).filter((s) => !STATUS_ORDER.includes(s) && data.totals[s]));
  const max = niceMax(Math.max(0, ...buckets.map((b) => statuses.reduce((n, s) => n + (b.counts[s] || 0), 0))));
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "throughput", width: "100%" });
  const plotW = W - L - R, plotH = H - T - B;
  for (let i = 0; i <= 4; i++) {
    const y = T + plotH - (plotH * i) / 4;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
    svg.append(svgEl("text", { x: L - 6, y: y + 4, class: "axis", "text-anchor": "end" }, String((max * i) / 4)));
  }
  const slot = plotW / Math.max(1, buckets.length);
  const barW = Math.max(1, slot * 0.8);
  const every = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    const x = L + i * slot + (slot - barW) / 2;
    let y = T + plotH;
    const tip = [hhmm(b.start) + " UTC"];
    for (const s of statuses) {
      const n = b.counts[s] || 0;
      if (!n) continue;
      tip.push(n + " " + s);
      const h = (plotH * n) / max;
      y -= h;
      const rect = svgEl("rect", { x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), class: "bar s-" + s });
      svg.append(rect);
    }
    if (tip.length > 1) {
      const hit = svgEl("rect", { x: (L + i * slot).toFixed(1), y: T, width: slot.toFixed(1), height: plotH, class: "hit" });
      hit.append(svgEl("title", {}, tip.join("\n")));
      svg.append(hit);
    }
    if (i % every === 0) {
      svg.append(svgEl("text", { x: (L + i * slot + slot / 2).toFixed(1), y: H - 6, class: "axis", "text-anchor": "middle" }, hhmm(b.start)));
    }
  });
  box.replaceChildren(svg);
  legend.replaceChildren(...statuses.map((s) => {
    const item = document.createElement("span");
    item.className = "key";
    const sw = document.createElement("i");
    sw.className = "swatch s-" + s;
    item.append(sw, document.createTextNode(s + " " + data.totals[s]));
    return item;
  }));
  if (!statuses.length) legend.textContent = "No jobs were created in this window.";
};

/* Horizontal bars: one row per item, a label, a bar scaled to the largest, a value. */
OPS.hbars = function (box, rows, empty) {
  if (!rows.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = empty;
    box.replaceChildren(p);
    return;
  }
  const W = 560, rowH = 24, L = 170, V = 120;
  const H = rows.length * rowH + 4;
  const max = Math.max(...rows.map((r) => r.value || 0), 1);
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "hbars", width: "100%", height: H });
  rows.forEach((r, i) => {
    const y = 2 + i * rowH;
    const g = svgEl("g", { class: "hrow", "data-name": r.label });
    const label = r.label.length > 24 ? r.label.slice(0, 23) + "…" : r.label;
    g.append(svgEl("text", { x: 0, y: y + 16, class: "label" }, label));
    const w = ((W - L - V) * (r.value || 0)) / max;
    if (r.under !== undefined) {
      const u = ((W - L - V) * r.under) / max;
      g.append(svgEl("rect", { x: L, y: y + 4, width: Math.max(1, w).toFixed(1), height: 14, class: "bar p95" }));
      g.append(svgEl("rect", { x: L, y: y + 4, width: Math.max(1, u).toFixed(1), height: 14, class: "bar p50" }));
    } else {
      g.append(svgEl("rect", { x: L, y: y + 4, width: Math.max(1, w).toFixed(1), height: 14, class: "bar " + (r.css || "") }));
    }
    g.append(svgEl("text", { x: W - V + 6, y: y + 16, class: "value" }, r.text));
    g.append(svgEl("title", {}, r.title || r.label));
    svg.append(g);
  });
  box.replaceChildren(svg);
};

OPS.overview = function () {
  const section = document.getElementById("overview");
  const select = document.getElementById("window");
  const live = document.getElementById("live");
  const state = document.getElementById("ov-state");
  let windowValue = section.dataset.window;
  let timer = null;

  async function load() {
    const res = await HW.api("GET", section.dataset.api + "?window=" + encodeURIComponent(windowValue));
    if (!res.ok) {
      live.classList.remove("on");
      state.textContent = "could not load the overview: " + HW.errorText(res);
      return;
    }
    live.classList.add("on");
    const data = res.data;
    document.getElementById("bucket-label").textContent = data.bucket_secs === 60 ? "minute" : (data.bucket_secs / 60) + " minutes";
    const totals = document.getElementById("totals");
    const all = Object.values(data.totals).reduce((a, b) => a + b, 0);
    const cells = [["jobs", all], ["completed", data.totals.completed || 0], ["failed", data.totals.failed || 0], ["running", data.totals.running || 0], ["pending", data.totals.pending || 0]];
    totals.replaceChildren(...cells.map(([k, v]) => {
      const d = document.createElement("div");
      d.className = "total t-" + k;
      const b = document.createElement("b");
      b.textContent = String(v);
      const s = document.createElement("span");
      s.className = "muted";
      s.textContent = k;
      d.append(b, s);
      return d;
    }));
    OPS.throughput(document.getElementById("throughput"), document.getElementById("legend"), data);
    OPS.hbars(document.getElementById("slowest"), data.slowest_tasks.map((t) => ({
      label: t.task, value: t.p95_ms, under: t.p50_ms,
      text: fmtMs(t.p50_ms) + " / " + fmtMs(t.p95_ms),
      title: t.task + ": " + t.runs + " runs, " + t.failed + " failed, p50 " + fmtMs(t.p50_ms) + ", p95 " + fmtMs(t.p95_ms) + ", max " + fmtMs(t.max_ms),
    })), "No task finished a run in this window.");
    OPS.hbars(document.getElementById("lag"), data.trigger_lag.map((t) => ({
      label: t.name, value: t.lag_ms || 0, css: "lag",
      text: (t.lag_events === null ? "?" : t.lag_events) + " ev · " + fmtMs(t.lag_ms),
      title: t.name + " (" + (t.type || "") + ", " + (t.state || "") + ")",
    })), "No trigger reports a lag (receivers do: queues, streams, CDC).");
    state.textContent = "jobs created " + data.since.replace("T", " ").slice(0, 16) + " – " + data.until.replace("T", " ").slice(0, 16) + " UTC, by their status now";
  }

  function schedule() {
    clearInterval(timer);
    timer = setInterval(load, 5000);
  }
  select.addEventListener("change", () => {
    windowValue = select.value;
    history.replaceState(null, "", "/?window=" + encodeURIComponent(windowValue));
    load();
    schedule();
  });
  load();
  schedule();
};

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "triggers") OPS.triggers();
  if (page === "workers") OPS.liveTable(document.getElementById("workers"));
  if (page === "dead-letters") OPS.deadLetters();
  if (page === "overview") OPS.overview();
});
