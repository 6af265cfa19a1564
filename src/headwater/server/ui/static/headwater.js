/* headwater's web UI: live updates (Server-Sent Events), actions through the public API,
   the Run form's checks. No framework, no build step. Server-rendered HTML arrives from
   the server's own templates (escaped there); everything else is set with textContent. */
"use strict";

const HW = { MAX_ROWS: 500, MAX_LOG_LINES: 20000 };

/* A call of the API as the UI: the session cookie goes along on its own; the header
   tells the server this write comes from the UI's script (a cross-site page cannot add it). */
HW.api = async function (method, url, body) {
  const init = { method, headers: { "X-Headwater-UI": "1", "Accept": "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  return { ok: resp.ok, status: resp.status, data };
};

HW.errorText = function (res) {
  const err = res.data && res.data.error;
  return err ? err.message : "HTTP " + res.status;
};

HW.fragment = function (html) {
  const t = document.createElement("template");
  t.innerHTML = html;
  return t.content;
};

/* ---------- Jobs ---------- */
HW.jobs = function () {
  const table = document.getElementById("jobs");
  const body = table.tBodies[0];
  const picked = document.getElementById("picked");
  const cancelBtn = document.getElementById("bulk-cancel");
  const retryBtn = document.getElementById("bulk-retry");
  const result = document.getElementById("bulk-result");
  const all = document.getElementById("pick-all");

  function selected() {
    return Array.from(body.querySelectorAll("input.pick:checked")).map((b) => b.value);
  }
  function refresh() {
    const n = selected().length;
    picked.textContent = n + " selected";
    cancelBtn.disabled = retryBtn.disabled = n === 0;
  }
  body.addEventListener("change", refresh);
  all.addEventListener("change", () => {
    body.querySelectorAll("input.pick").forEach((b) => { b.checked = all.checked; });
    refresh();
  });

  async function bulk(action) {
    const ids = selected();
    let done = 0;
    const problems = [];
    for (const id of ids) {
      const res = await HW.api("POST", "/api/jobs/" + id + "/" + action);
      if (res.ok) done += 1; else problems.push(id.slice(-8) + ": " + HW.errorText(res));
    }
    const verb = action === "cancel" ? "cancelled" : "retried";
    result.textContent = done + " " + verb + (problems.length ? "; skipped " + problems.join("; ") : "");
    body.querySelectorAll("input.pick:checked").forEach((b) => { b.checked = false; });
    all.checked = false;
    refresh();
  }
  cancelBtn.addEventListener("click", () => bulk("cancel"));
  retryBtn.addEventListener("click", () => bulk("retry"));

  /* Everything the filters select, through the API's bulk routes: a dry run first says
     how many jobs it touches, and the operator confirms. */
  async function bulkByFilter(action) {
    const selection = JSON.parse(document.getElementById("bulk").dataset.filter);
    const dry = await HW.api("POST", "/api/jobs/" + action, Object.assign({}, selection, { dry_run: true }));
    if (!dry.ok) { result.textContent = HW.errorText(dry); return; }
    const n = dry.data.jobs.length;
    if (n === 0) { result.textContent = "no job to " + action + " (" + dry.data.skipped.length + " skipped)"; return; }
    const more = dry.data.truncated ? " (more match; run it again for the rest)" : "";
    if (!window.confirm(action + " " + n + " job" + (n === 1 ? "" : "s") + more + "?")) return;
    const res = await HW.api("POST", "/api/jobs/" + action, selection);
    if (!res.ok) { result.textContent = HW.errorText(res); return; }
    const verb = action === "cancel" ? "cancelled" : "retried";
    result.textContent = res.data.jobs.length + " " + verb + ", " + res.data.skipped.length + " skipped";
  }
  const filterCancel = document.getElementById("filter-cancel");
  const filterRetry = document.getElementById("filter-retry");
  if (filterCancel) filterCancel.addEventListener("click", () => bulkByFilter("cancel"));
  if (filterRetry) filterRetry.addEventListener("click", () => bulkByFilter("retry"));

  const url = table.dataset.stream;
  if (!url) return;
  const live = document.getElementById("live");
  const source = new EventSource(url);
  source.addEventListener("open", () => live.classList.add("on"));
  source.addEventListener("error", () => live.classList.remove("on"));
  source.addEventListener("rows", (ev) => {
    const rows = Array.from(HW.fragment(ev.data).querySelectorAll("tr"));
    const empty = document.getElementById("no-jobs");
    if (empty && rows.length) empty.remove();
    // Newest first: insert from the oldest so the newest ends on top.
    rows.reverse().forEach((row) => {
      const old = document.getElementById(row.id);
      if (old) {
        const box = old.querySelector("input.pick");
        if (box && box.checked) row.querySelector("input.pick").checked = true;
        old.replaceWith(row);
      } else {
        body.insertBefore(row, body.firstChild);
      }
    });
    // A long-open page keeps the newest rows only; older ones are a page away.
    while (body.rows.length > HW.MAX_ROWS) body.deleteRow(body.rows.length - 1);
  });
};

/* ---------- Job page ---------- */
HW.job = function () {
  const live = document.getElementById("live");
  const actions = document.getElementById("actions");
  const jobId = actions.dataset.job;
  const logs = document.getElementById("logs");
  const state = document.getElementById("log-state");
  const result = document.getElementById("action-result");
  const follow = document.getElementById("follow");

  function syncButtons() {
    const head = document.getElementById("job-status");
    const terminal = head && head.dataset.terminal === "yes";
    const failed = head && head.dataset.status !== "completed";
    document.getElementById("cancel").disabled = terminal;
    document.getElementById("retry").disabled = !terminal;
    const from = document.getElementById("retry-from");
    from.disabled = !terminal || !failed || !document.getElementById("from-step").options.length;
  }
  syncButtons();

  document.querySelectorAll("input.show-stream").forEach((box) => {
    box.addEventListener("change", () => logs.classList.toggle("hide-" + box.value, !box.checked));
  });
  document.getElementById("show-ts").addEventListener("change", (ev) => {
    logs.classList.toggle("hide-ts", !ev.target.checked);
  });

  function addLines(lines) {
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const row = document.createElement("div");
      row.className = "line " + l.stream;
      const ts = document.createElement("span");
      ts.className = "ts";
      ts.textContent = (l.ts || "").replace("T", " ").replace("Z", "").slice(0, 23);
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = (l.step ? l.step + " " : "") + l.stream;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = l.line;
      row.append(ts, tag, text);
      frag.appendChild(row);
    }
    logs.appendChild(frag);
    // The page keeps the last lines; the download has them all.
    let extra = logs.childElementCount - HW.MAX_LOG_LINES;
    while (extra-- > 0) logs.firstElementChild.remove();
    if (follow.checked) logs.scrollTop = logs.scrollHeight;
  }

  const source = new EventSource(live.dataset.stream);
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("job", (ev) => {
    live.replaceChildren(HW.fragment(ev.data));
    syncButtons();
  });
  source.addEventListener("logs", (ev) => addLines(JSON.parse(ev.data)));
  source.addEventListener("end", (ev) => {
    state.textContent = "finished (" + ev.data + ")";
    source.close();
  });
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) state.textContent = "reconnecting…";
  });

  async function act(button) {
    const action = button.dataset.action;
    const base = "/api/jobs/" + jobId;
    let res;
    if (action === "cancel") res = await HW.api("POST", base + "/cancel");
    else if (action === "retry") res = await HW.api("POST", base + "/retry");
    else if (action === "retry-from") {
      res = await HW.api("POST", base + "/retry", { from_step: document.getElementById("from-step").value });
    } else if (action === "approve") res = await HW.api("POST", base + "/steps/" + encodeURIComponent(button.dataset.step) + "/approve");
    else if (action === "reject") res = await HW.api("POST", base + "/steps/" + encodeURIComponent(button.dataset.step) + "/reject", {});
    else return;
    if (!res.ok) { result.textContent = HW.errorText(res); return; }
    if (action === "retry" || action === "retry-from") {
      window.location.assign("/jobs/" + res.data.id);
      return;
    }
    result.textContent = action === "cancel" ? "cancel requested" : action + "d";
  }
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button && !button.disabled) act(button);
  });
};

/* ---------- Run form ---------- */
HW.runForm = function (form) {
  const task = form.dataset.task;
  const status = form.querySelector(".run-status");

  function fieldError(name, message) {
    const slot = form.querySelector('.field-error[data-for="' + CSS.escape(name) + '"]');
    if (slot) { slot.textContent = message; return true; }
    return false;
  }

  function collect() {
    const input = {};
    const errors = {};
    form.querySelectorAll("[data-field]").forEach((el) => {
      const name = el.dataset.field;
      const type = el.dataset.type;
      const required = el.dataset.required === "yes";
      let raw = el.type === "checkbox" ? el.checked : el.value;
      if (el.multiple) raw = Array.from(el.selectedOptions).map((o) => o.value);
      if (type === "boolean") { input[name] = raw; return; }
      if (raw === "" || (Array.isArray(raw) && raw.length === 0)) {
        if (required) errors[name] = "required";
        return;
      }
      if (type === "integer" || type === "number") {
        const n = Number(raw);
        if (!Number.isFinite(n) || (type === "integer" && !Number.isInteger(n))) {
          errors[name] = type === "integer" ? "must be a whole number" : "must be a number";
          return;
        }
        input[name] = n;
      } else if (["array", "object", "json", "any"].includes(type) && !el.multiple) {
        try { input[name] = JSON.parse(raw); } catch (e) { errors[name] = "must be JSON"; }
      } else {
        input[name] = raw;
      }
    });
    return { input, errors };
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelectorAll(".field-error").forEach((s) => { s.textContent = ""; });
    status.textContent = "";
    const { input, errors } = collect();
    const names = Object.keys(errors);
    if (names.length) {
      names.forEach((n) => fieldError(n, errors[n]));
      status.textContent = "Fix the fields marked above.";
      return;
    }
    const res = await HW.api("POST", "/api/tasks/" + encodeURIComponent(task) + "/run", { input });
    if (res.ok) {
      window.location.assign("/jobs/" + res.data.job_id);
      return;
    }
    const details = res.data && res.data.error && res.data.error.details;
    const reasons = (details && details.reasons) || [];
    const general = [];
    reasons.forEach((reason) => {
      const m = /`([^`]+)`/.exec(reason);
      if (!(m && fieldError(m[1].split(".")[0], reason))) general.push(reason);
    });
    status.textContent = general.length ? general.join("; ") : (reasons.length ? "Fix the fields marked above." : HW.errorText(res));
  });
};

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "jobs") HW.jobs();
  if (page === "job") HW.job();
  document.querySelectorAll("form.run").forEach((f) => HW.runForm(f));
});
