// The quart_sched dashboard. It talks only to the REST API of the same origin, so it can
// do exactly what the API lets the signed-in user do. No library, no build step.
"use strict";

(function () {
  const API = document.body.dataset.api;
  const POLL_MS = 2000;
  const HOURLY_MS = 30000;
  const HOURLY_MIN_MS = 5000;
  const STRIP_RUNS = 20;
  const DETAIL_RUNS = 50;
  const OUTCOMES = ["success", "error", "missed", "skipped", "interrupted", "running"];
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = { rows: new Map(), detail: null, detailSig: "", busy: false, again: null, wake: null,
    hourlyAt: 0, hourlyNewest: "",
    hourlyRuns: null, detailRuns: null };

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    if (response.status === 204) return { data: null, response };
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) data = await response.json();
    if (!response.ok) {
      const message =
        (data && data.error_message) ||
        (response.status === 401 ? "Not signed in: reload the page to sign in" : response.statusText);
      throw new ApiError(response.status, message, data && data.field);
    }
    return { data, response };
  }

  const get = async (path) => (await api("GET", path)).data;

  // ---------------------------------------------------------- formatting

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function relative(iso) {
    const diff = (new Date(iso).getTime() - Date.now()) / 1000;
    const abs = Math.abs(diff);
    let text;
    if (abs < 1) return "now";
    if (abs < 60) text = `${Math.round(abs)} s`;
    else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
    else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
    else text = `${Math.round(abs / 86400)} d`;
    return diff > 0 ? `in ${text}` : `${text} ago`;
  }

  function timeEl(iso) {
    if (!iso) return el("span", { class: "muted", text: "—" });
    const when = new Date(iso);
    return el("time", { datetime: iso, title: when.toString(), text: relative(iso) });
  }

  function clock(iso) {
    const when = new Date(iso);
    const sameDay = when.toDateString() === new Date().toDateString();
    return sameDay ? when.toLocaleTimeString() : when.toLocaleString();
  }

  function outcomeBadge(outcome) {
    return el("span", { class: `badge o-${outcome}`, text: outcome });
  }

  function say(message) {
    const notice = $("notice");
    notice.textContent = message;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => (notice.textContent = ""), 6000);
  }

  function problem(message) {
    const box = $("problem");
    box.textContent = message || "";
    box.hidden = !message;
  }

  // ------------------------------------------------------------- charts

  // Recent outcomes, oldest on the left: one square per run.
  function strip(runs) {
    const size = 9;
    const gap = 2;
    const shown = runs.slice(0, STRIP_RUNS).reverse();
    const width = Math.max(1, STRIP_RUNS * (size + gap));
    const root = svg("svg", {
      class: "strip",
      viewBox: `0 0 ${width} ${size}`,
      width,
      height: size,
      role: "img",
      "aria-label": shown.length
        ? `last ${shown.length} runs: ` + shown.map((r) => r.outcome).join(", ")
        : "no runs yet",
    });
    shown.forEach((run, index) => {
      const rect = svg("rect", {
        x: index * (size + gap),
        y: 0,
        width: size,
        height: size,
        rx: 2,
        class: `o-${run.outcome}`,
      });
      rect.append(svg("title", {}, `${clock(run.started_at || run.scheduled_run_time)}: ${run.outcome}` +
        (run.duration !== null ? `, ${duration(run.duration)}` : "")));
      root.append(rect);
    });
    return root;
  }

  // Bars of run durations, oldest on the left, coloured by outcome.
  // Charts are drawn at their box's width in pixels, so their text keeps its size on a phone.
  function widthOf(box) {
    return Math.max(280, Math.floor(box.clientWidth || 600));
  }

  function durationChart(runs, width) {
    const shown = runs.filter((r) => r.duration !== null).slice(0, DETAIL_RUNS).reverse();
    const height = 160;
    const left = 56;
    const bottom = 20;
    const root = svg("svg", {
      class: "bars",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": shown.length
        ? `durations of the last ${shown.length} runs, longest ${duration(Math.max(...shown.map((r) => r.duration)))}`
        : "no finished runs yet",
    });
    if (!shown.length) {
      root.append(svg("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "no finished runs yet"));
      return root;
    }
    const max = Math.max(...shown.map((r) => r.duration)) || 1;
    const plot = height - bottom - 8;
    const step = (width - left) / Math.max(shown.length, 10);
    axis(root, left, width, height - bottom, plot, duration(max), "0");
    shown.forEach((run, index) => {
      const h = Math.max(1, (run.duration / max) * plot);
      const rect = svg("rect", {
        x: left + index * step + 1,
        y: height - bottom - h,
        width: Math.max(1, step - 2),
        height: h,
        class: `o-${run.outcome}`,
      });
      rect.append(svg("title", {}, `${clock(run.started_at)}: ${run.outcome}, ${duration(run.duration)}`));
      root.append(rect);
    });
    root.append(svg("text", { x: left, y: height - 4, class: "axis" }, "older"));
    root.append(svg("text", { x: width, y: height - 4, class: "axis", "text-anchor": "end" }, "newer"));
    return root;
  }

  function axis(root, left, right, base, plot, topLabel, bottomLabel) {
    root.append(svg("line", { x1: left, x2: right, y1: base, y2: base, class: "grid-line" }));
    root.append(svg("line", { x1: left, x2: right, y1: base - plot, y2: base - plot, class: "grid-line faint" }));
    root.append(svg("text", { x: left - 6, y: base - plot + 4, class: "axis", "text-anchor": "end" }, topLabel));
    root.append(svg("text", { x: left - 6, y: base + 4, class: "axis", "text-anchor": "end" }, bottomLabel));
  }

  // Runs started in each of the last 24 hours, stacked by outcome.
  function hourlyChart(runs, width) {
    const height = 170;
    const left = 40;
    const bottom = 22;
    const hour = 3600 * 1000;
    const end = Math.ceil(Date.now() / hour) * hour;
    const buckets = Array.from({ length: 24 }, () => Object.fromEntries(OUTCOMES.map((o) => [o, 0])));
    for (const run of runs) {
      const at = new Date(run.started_at || run.scheduled_run_time).getTime();
      const index = 23 - Math.floor((end - at - 1) / hour);
      if (index >= 0 && index < 24 && run.outcome in buckets[index]) buckets[index][run.outcome] += 1;
    }
    const totals = buckets.map((b) => OUTCOMES.reduce((sum, o) => sum + b[o], 0));
    const max = Math.max(1, ...totals);
    const root = svg("svg", {
      class: "bars",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `runs per hour over the last 24 hours: ${totals.reduce((a, b) => a + b, 0)} in all, at most ${max} in an hour`,
    });
    const plot = height - bottom - 8;
    const step = (width - left) / 24;
    axis(root, left, width, height - bottom, plot, String(max), "0");
    buckets.forEach((bucket, index) => {
      let y = height - bottom;
      const start = new Date(end - (24 - index) * hour);
      const label = start.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      for (const outcome of OUTCOMES) {
        if (!bucket[outcome]) continue;
        const h = (bucket[outcome] / max) * plot;
        y -= h;
        const rect = svg("rect", { x: left + index * step + 2, y, width: step - 4, height: h, class: `o-${outcome}` });
        rect.append(svg("title", {}, `${label}: ${bucket[outcome]} ${outcome}`));
        root.append(rect);
      }
      if (index % (width < 560 ? 6 : 3) === 0) {
        root.append(svg("text", { x: left + index * step + 2, y: height - 5, class: "axis" }, label));
      }
    });
    return root;
  }

  // --------------------------------------------------------------- views

  function renderInfo(info) {
    const badge = $("state");
    badge.textContent = info.state || (info.running ? "running" : "stopped");
    badge.className = `badge s-${badge.textContent}`;
    badge.setAttribute("aria-label", `scheduler ${badge.textContent}`);
    $("host").textContent = `on ${info.current_host}`;
    const role = $("role");
    if (info.role) {
      role.hidden = false;
      const leader = info.leader;
      const named = leader && info.role !== "leader" ? ` (leader: ${leader.host}, pid ${leader.pid})` : "";
      role.textContent = info.role + named;
      role.title = leader ? `epoch ${leader.epoch}, leading since ${leader.since}` : "";
      role.className = `badge r-${info.role}`;
    } else {
      role.hidden = true;
    }
    const current = badge.textContent;
    $("pause-scheduler").hidden = current !== "running";
    $("resume-scheduler").hidden = current !== "paused";
    $("start-scheduler").hidden = current !== "stopped";
  }

  function renderRunning(runs) {
    const list = $("running");
    list.replaceChildren(
      ...runs.map((run) =>
        el("li", {},
          outcomeBadge("running"),
          el("strong", { text: ` ${run.job_id} ` }),
          el("span", { class: "muted", text: "started " }),
          timeEl(run.started_at),
          run.host ? el("span", { class: "muted", text: ` on ${run.host}` }) : null,
        ),
      ),
    );
    $("no-running").hidden = runs.length > 0;
    $("running-count").textContent = runs.length ? String(runs.length) : "";
  }

  function actionButton(label, action, jobId, extra) {
    return el("button", { type: "button", "data-action": action, "data-job": jobId, class: extra || null, text: label });
  }

  // A row per job, kept across refreshes so focus and open menus survive polling.
  function jobRow(job) {
    let row = state.rows.get(job.id);
    if (!row) {
      row = el("tr", { "data-job": job.id });
      const cells = ["job", "trigger", "next", "last", "recent", "actions"].map((name, index) =>
        el("td", { "data-label": ["Job", "Trigger", "Next run", "Last run", "Recent runs", ""][index], class: `c-${name}` }),
      );
      row.append(...cells);
      const toggle = actionButton("Pause", "pause", job.id);
      const actions = el("div", { class: "row-actions" },
        toggle,
        actionButton("Run now", "run", job.id),
        actionButton("History", "history", job.id),
        actionButton("Remove", "remove", job.id, "danger"),
      );
      cells[5].append(actions);
      row.qsCells = cells;
      row.qsToggle = toggle;
      state.rows.set(job.id, row);
    }
    const [cJob, cTrigger, cNext, cLast, , ] = row.qsCells;
    const paused = job.next_run_time === null;
    const jobBits = [el("strong", { class: "job-name", text: job.name })];
    if (job.name !== job.id) jobBits.push(el("span", { class: "muted job-id", text: ` ${job.id}` }));
    if (paused) jobBits.push(el("span", { class: "badge s-paused", text: "paused" }));
    if (job.running_instances) jobBits.push(el("span", { class: "badge o-running", text: "running" }));
    if (job.load_error) jobBits.push(el("span", { class: "badge o-error", title: job.load_error, text: "cannot load" }));
    jobBits.push(el("div", { class: "muted func", text: job.func || "(no importable reference)" }));
    if (job.load_error) jobBits.push(el("div", { class: "error", text: job.load_error }));
    cJob.replaceChildren(...jobBits);
    cTrigger.textContent = job.trigger_description || job.trigger;
    cNext.replaceChildren(paused ? el("span", { class: "muted", text: "paused" }) : timeEl(job.next_run_time));
    const last = job.last_run;
    cLast.replaceChildren(
      ...(last
        ? [
            el("span", { class: "nowrap" }, outcomeBadge(last.outcome), ` ${duration(last.duration)}`),
            el("div", { class: "muted" }, timeEl(last.started_at)),
          ]
        : [el("span", { class: "muted", text: "never ran" })]),
    );
    if (last && last.error) cLast.append(el("div", { class: "error small", text: last.error }));
    row.classList.toggle("is-paused", paused);
    const wanted = paused ? ["Resume", "resume"] : ["Pause", "pause"];
    if (row.qsToggle.dataset.action !== wanted[1]) {
      row.qsToggle.textContent = wanted[0];
      row.qsToggle.dataset.action = wanted[1];
    }
    return row;
  }

  function renderJobs(jobs, recent) {
    const body = $("job-rows");
    const byJob = new Map();
    for (const run of recent) {
      if (!byJob.has(run.job_id)) byJob.set(run.job_id, []);
      byJob.get(run.job_id).push(run);
    }
    const ids = new Set(jobs.map((j) => j.id));
    for (const [id, row] of state.rows) {
      if (!ids.has(id)) {
        row.remove();
        state.rows.delete(id);
      }
    }
    // Sorted by id, not by next run: rows that jump every tick cannot be followed.
    const sorted = [...jobs].sort((a, b) => a.id.localeCompare(b.id));
    sorted.forEach((job, index) => {
      const row = jobRow(job);
      row.qsCells[4].replaceChildren(strip(byJob.get(job.id) || []));
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    $("no-jobs").hidden = jobs.length > 0;
    $("job-count").textContent = String(jobs.length);
  }

  function renderDetail(runs) {
    const sig = JSON.stringify(runs.map((r) => [r.run_id, r.outcome, r.duration]));
    if (sig === state.detailSig) return;
    state.detailSig = sig;
    state.detailRuns = runs;
    $("durations").replaceChildren(durationChart(runs, widthOf($("durations"))));
    const body = $("run-rows");
    const open = new Set([...body.querySelectorAll("details[open]")].map((d) => d.dataset.run));
    const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.closest("details") : null;
    const focusRun = focused ? focused.dataset.run : null;
    body.replaceChildren(
      ...runs.map((run) => {
        let errorCell;
        if (run.error_type || run.error) {
          const details = el("details", { "data-run": run.run_id, open: open.has(run.run_id) });
          details.append(el("summary", {},
            el("strong", { text: run.error_type || "Error" }),
            run.error_message ? el("span", { text: `: ${run.error_message}` }) : null,
          ));
          details.append(el("pre", { class: "traceback", text: run.traceback || run.error || "(no traceback recorded)" }));
          errorCell = el("td", { "data-label": "Error" }, details);
        } else {
          errorCell = el("td", { "data-label": "Error", class: "muted", text: "—" });
        }
        return el("tr", { "data-run": run.run_id, "data-outcome": run.outcome },
          el("td", { "data-label": "Started" }, run.started_at ? el("time", { datetime: run.started_at, title: new Date(run.started_at).toString(), text: clock(run.started_at) }) : el("span", { class: "muted", text: "never started" })),
          el("td", { "data-label": "Outcome" }, outcomeBadge(run.outcome)),
          el("td", { "data-label": "Duration", text: duration(run.duration) }),
          errorCell,
        );
      }),
    );
    if (focusRun) {
      const again = body.querySelector(`details[data-run="${CSS.escape(focusRun)}"] summary`);
      if (again) again.focus();
    }
    $("no-runs").hidden = runs.length > 0;
  }

  // -------------------------------------------------------------- polling

  // One refresh at a time; one asked for meanwhile (after an action) runs right after.
  async function refresh() {
    if (state.busy) {
      state.again = state.again || new Promise((resolve) => (state.wake = resolve));
      return state.again;
    }
    state.busy = true;
    try {
      const [info, jobs, running, recent] = await Promise.all([
        get(""),
        get("/jobs"),
        get("/runs/running").catch(() => []),
        get("/runs?limit=200").catch(() => []),
      ]);
      renderInfo(info);
      renderJobs(jobs, recent);
      renderRunning(running);
      // The hour chart reads up to a day of runs: redraw it when runs came, at most every
      // 5 s, and every 30 s anyway (hours roll over).
      const newest = recent.length ? recent[0].run_id + recent[0].outcome : "";
      const age = Date.now() - state.hourlyAt;
      if (age > HOURLY_MS || (newest !== state.hourlyNewest && age > HOURLY_MIN_MS)) {
        state.hourlyAt = Date.now();
        state.hourlyNewest = newest;
        refreshHourly();
      }
      if (state.detail !== null) {
        const runs = await get(`/jobs/${encodeURIComponent(state.detail)}/runs?limit=${DETAIL_RUNS}`);
        renderDetail(runs);
      }
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      problem("");
    } catch (error) {
      problem(`Cannot reach the scheduler: ${error.message}`);
    } finally {
      state.busy = false;
      const wake = state.wake;
      if (state.again) {
        state.again = state.wake = null;
        refresh().then(wake);
      }
    }
  }

  async function refreshHourly() {
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    let path = `/runs?limit=500&since=${encodeURIComponent(since)}`;
    const runs = [];
    try {
      // At most 10 pages (5,000 runs): enough to draw the shape of a busy day.
      for (let page = 0; page < 10 && path; page += 1) {
        const { data, response } = await api("GET", path);
        runs.push(...data);
        const cursor = response.headers.get("X-Next-Cursor");
        path = cursor ? `/runs?limit=500&since=${encodeURIComponent(since)}&cursor=${cursor}` : null;
      }
      state.hourlyRuns = runs;
      $("hourly").replaceChildren(hourlyChart(runs, widthOf($("hourly"))));
    } catch (error) {
      $("hourly").replaceChildren(el("p", { class: "muted", text: `No run history: ${error.message}` }));
    }
  }

  function loop(fn, ms) {
    const tick = async () => {
      if (!document.hidden) await fn();
      setTimeout(tick, ms);
    };
    tick();
  }

  // --------------------------------------------------------------- actions

  function confirmRemove(jobId) {
    const dialog = $("confirm");
    $("confirm-text").textContent = `Remove the job ${jobId}? Its run history is kept.`;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function jobAction(action, jobId, button) {
    const path = `/jobs/${encodeURIComponent(jobId)}`;
    try {
      if (action === "pause" || action === "resume") {
        await api("POST", `${path}/${action}`);
        say(`${jobId} ${action === "pause" ? "paused" : "resumed"}`);
      } else if (action === "run") {
        await api("POST", `${path}/run?wait=false`);
        say(`${jobId} started`);
        if (state.detail === null) openDetail(jobId, false);
      } else if (action === "remove") {
        if (!(await confirmRemove(jobId))) return;
        await api("DELETE", path);
        say(`${jobId} removed`);
        if (state.detail === jobId) closeDetail();
        $("jobs").focus();
      } else if (action === "history") {
        openDetail(jobId, true);
        return;
      }
    } catch (error) {
      say(`${jobId}: ${error.message}`);
    }
    await refresh();
    if (button && document.contains(button) && action !== "remove") button.focus();
  }

  function openDetail(jobId, focus) {
    state.detail = jobId;
    state.detailSig = "";
    $("detail-id").textContent = jobId;
    $("detail").hidden = false;
    $("run-rows").replaceChildren();
    $("durations").replaceChildren();
    refresh();
    if (focus) {
      $("h-detail").focus();
      $("detail").scrollIntoView({ block: "start" });
    }
  }

  function closeDetail() {
    const jobId = state.detail;
    state.detail = null;
    $("detail").hidden = true;
    const row = jobId && state.rows.get(jobId);
    if (row) row.querySelector('[data-action="history"]').focus();
  }

  async function schedulerAction(action) {
    try {
      await api("POST", `/${action}`);
      say(`scheduler ${action === "start" ? "started" : action + "d"}`);
    } catch (error) {
      say(`scheduler: ${error.message}`);
    }
    await refresh();
  }

  // ------------------------------------------------------------ add a job

  const form = $("add-job");
  const NUMBER = /^\s*\d+(\.\d+)?\s*$/;

  function showTrigger() {
    const trigger = form.elements.trigger.value;
    for (const set of form.querySelectorAll("fieldset[data-trigger]")) {
      const on = set.dataset.trigger === trigger;
      set.hidden = !on;
      set.disabled = !on;
    }
  }

  function clearErrors() {
    for (const p of form.querySelectorAll(".error")) p.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  // The API's message, beside the field it names; elsewhere at the top of the form.
  function showError(field, message) {
    const input = field && form.elements[field];
    const slot = input && !input.disabled && $(`e-${field}`);
    if (slot) {
      slot.textContent = message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      $("form-error").textContent = message;
      $("form-error").scrollIntoView({ block: "nearest" });
    }
  }

  function formBody() {
    const body = { trigger: form.elements.trigger.value };
    for (const input of form.querySelectorAll("input")) {
      const value = input.value.trim();
      if (!value || input.disabled || input.closest("fieldset:disabled")) continue;
      const name = input.name;
      if (["args", "kwargs"].includes(name)) {
        try {
          body[name] = JSON.parse(value);
        } catch (error) {
          throw new ApiError(400, `${name} is not valid JSON: ${error.message}`, name);
        }
      } else if (["days", "hours", "minutes", "seconds"].includes(name) && NUMBER.test(value)) {
        body[name] = Number(value);
      } else {
        body[name] = value; // the API says what is wrong with it
      }
    }
    return body;
  }

  async function submitJob(event) {
    event.preventDefault();
    clearErrors();
    try {
      const body = formBody();
      const { data } = await api("POST", "/jobs", body);
      say(`${data.id} added: ${data.trigger_description || data.trigger}`);
      form.reset();
      showTrigger();
      await refresh();
    } catch (error) {
      if (!(error instanceof ApiError)) return showError(null, error.message);
      const field = error.field || (error.status === 403 ? "func" : error.status === 409 ? "id" : null);
      showError(field, error.message);
    }
  }

  async function loadFunctions() {
    try {
      const allowed = await get("/functions");
      $("functions").replaceChildren(...allowed.functions.map((f) => el("option", { value: f })));
      const hint = allowed.patterns.length ? `Or any function matching ${allowed.patterns.join(", ")}.` : "";
      $("h-func").textContent = allowed.functions.length
        ? `${allowed.functions.length} function(s) allowed. ${hint}`
        : hint || "No function may be scheduled over the API.";
    } catch (error) {
      $("h-func").textContent = error.message;
    }
  }

  // --------------------------------------------------------------- wiring

  $("job-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) jobAction(button.dataset.action, button.dataset.job, button);
  });
  $("pause-scheduler").addEventListener("click", () => schedulerAction("pause"));
  $("resume-scheduler").addEventListener("click", () => schedulerAction("resume"));
  $("start-scheduler").addEventListener("click", () => schedulerAction("start"));
  $("detail-close").addEventListener("click", closeDetail);
  form.elements.trigger.addEventListener("change", showTrigger);
  form.addEventListener("submit", submitJob);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (state.hourlyRuns) $("hourly").replaceChildren(hourlyChart(state.hourlyRuns, widthOf($("hourly"))));
      if (state.detailRuns) $("durations").replaceChildren(durationChart(state.detailRuns, widthOf($("durations"))));
    }, 150);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });

  showTrigger();
  loadFunctions();
  loop(refresh, POLL_MS);
})();
