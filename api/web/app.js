// The txt2img web page: a client of the public API, nothing more. No build step, no
// dependencies; served under a Content-Security-Policy that allows no inline code, so every
// node is built with the DOM API and text goes in through textContent, never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "txt2img.apiKey";
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
  const PAGE_SIZE = 10;
  // GET /v1/jobs/{id} with `Prefer: wait=N` answers as soon as the job ends, or after N s.
  const POLL_WAIT_S = 2;
  const MIN_POLL_MS = 500;
  const STREAM_FAILURES_BEFORE_POLLING = 3;
  const NOT_IN_LINE = { queue_position: null, estimated_start_at: null };

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null,
    job: null,
    follow: null, // AbortController of the live updates of `job`
    announced: "",
    cursors: [null], // the cursor of each page of recent jobs seen so far
    page: 0,
    nextCursor: null,
  };

  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  }

  // --- talking to the API ---

  function authHeaders(extra) {
    return { Authorization: `Bearer ${state.key}`, ...extra };
  }

  async function problemFrom(response) {
    let problem = null;
    try {
      problem = JSON.parse(await response.text());
    } catch {
      problem = null;
    }
    if (!problem || typeof problem !== "object") {
      problem = { title: response.statusText || `HTTP ${response.status}` };
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return new ApiError(response.status, problem, Number.isNaN(retryAfter) ? null : retryAfter);
  }

  async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
    const init = {
      method,
      signal,
      cache: "no-store",
      headers: authHeaders({ Accept: "application/json", ...headers }),
    };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (!response.ok) throw await problemFrom(response);
    return response.status === 204 ? null : response.json();
  }

  const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      }, { once: true });
    });
  }

  // --- errors ---

  function clearErrors() {
    const box = $("errors");
    box.hidden = true;
    box.replaceChildren();
    for (const el of document.querySelectorAll("[aria-invalid]")) {
      el.removeAttribute("aria-invalid");
    }
  }

  function showError(err, context) {
    const box = $("errors");
    const heading = document.createElement("strong");
    heading.textContent = context;
    const text = document.createElement("p");
    let invalid = null;
    const list = document.createElement("ul");
    if (err instanceof ApiError) {
      const { title, detail, code } = err.problem;
      text.textContent = `${err.status} ${title || ""}${detail ? `: ${detail}` : ""}`;
      if (code) text.title = code;
      if (err.status === 429 && err.retryAfter !== null) {
        text.textContent += ` Try again in ${err.retryAfter} s.`;
      }
      if (err.status === 401) {
        text.textContent += " Check the key, or forget it and enter another.";
      }
      for (const fieldError of err.problem.errors || []) {
        const item = document.createElement("li");
        item.textContent = `${fieldError.field}: ${fieldError.message}`;
        list.append(item);
        const input = $(String(fieldError.field).replace(/^body\./, ""));
        if (input && input.form === $("job-form")) {
          input.setAttribute("aria-invalid", "true");
          invalid ??= input;
        }
      }
    } else {
      text.textContent = `Could not reach the service (${err.message || err}).`;
    }
    box.replaceChildren(heading, text);
    if (list.children.length) box.append(list);
    box.hidden = false;
    (invalid || box).focus();
  }

  // --- the key ---

  function renderKey() {
    const hasKey = Boolean(state.key);
    $("key-form").hidden = hasKey;
    $("key-set").hidden = !hasKey;
    $("key-hint").textContent = hasKey ? `…${state.key.slice(-4)}` : "";
    $("recent").hidden = !hasKey;
    if (!hasKey) {
      $("job").hidden = true;
      $("recent-list").replaceChildren();
    }
  }

  async function useKey(key) {
    clearErrors();
    state.key = key;
    try {
      await loadRecent(true);
    } catch (err) {
      state.key = null;
      if (err instanceof ApiError && err.status === 401) sessionStorage.removeItem(KEY_STORAGE);
      renderKey();
      showError(err, "The key was not accepted");
      return false;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    renderKey();
    return true;
  }

  function forgetKey() {
    stopFollowing();
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    state.job = null;
    clearErrors();
    renderKey();
    history.replaceState(null, "", location.pathname);
    $("api-key").value = "";
    $("api-key").focus();
  }

  // --- submitting ---

  function readForm() {
    const form = $("job-form");
    const body = { prompt: form.prompt.value };
    if (form.negative_prompt.value.trim()) body.negative_prompt = form.negative_prompt.value;
    for (const name of ["width", "height", "num_inference_steps", "seed", "num_images"]) {
      if (form[name].value !== "") body[name] = Number.parseInt(form[name].value, 10);
    }
    if (form.guidance_scale.value !== "") {
      body.guidance_scale = Number.parseFloat(form.guidance_scale.value);
    }
    return body;
  }

  async function submitJob(event) {
    event.preventDefault();
    clearErrors();
    if (!state.key) {
      showError(new Error("no API key"), "Enter your API key first");
      $("api-key").focus();
      return;
    }
    const button = $("submit");
    button.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", body: readForm() });
      showJob(job);
      follow(job);
      history.replaceState(null, "", `#job/${encodeURIComponent(job.id)}`);
      refreshRecent(true);
    } catch (err) {
      showError(err, "The job was not submitted");
    } finally {
      button.disabled = false;
    }
  }

  // --- one job ---

  // 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, ...
  function ordinal(n) {
    const teen = n % 100 >= 11 && n % 100 <= 13;
    const suffix = teen ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th");
    return `${n}${suffix}`;
  }

  // "3rd in line, about 12 s" (two jobs go before it), "next in line"; "" when the service
  // does not tell. Both are the API's estimates.
  function placeInLine(job) {
    const position = job.queue_position;
    if (position === null || position === undefined) return "";
    let text = position === 0 ? "next in line" : `${ordinal(position + 1)} in line`;
    if (job.estimated_start_at) {
      const seconds = Math.round((Date.parse(job.estimated_start_at) - Date.now()) / 1000);
      if (Number.isFinite(seconds)) text += `, about ${Math.max(0, seconds)} s`;
    }
    return text;
  }

  function statusText(job) {
    const percent = Math.round(job.progress * 100);
    switch (job.status) {
      case "queued": {
        const place = placeInLine(job);
        return place ? `Queued: ${place}` : "Queued";
      }
      case "running":
        return `Running: ${percent}%`;
      case "succeeded": {
        const n = job.images?.length ?? 0;
        return `Succeeded: ${n} image${n === 1 ? "" : "s"}`;
      }
      case "failed":
        return `Failed: ${job.error ? `${job.error.message} (${job.error.code})` : "no reason given"}`;
      case "canceled":
        return "Canceled";
      default:
        return job.status;
    }
  }

  function announce(job) {
    // The live region speaks on status changes, every quarter of the progress (not on every
    // step) and, while the job is queued, when its position in line moves.
    const quarter = job.status === "running" ? Math.floor(job.progress * 4) : 0;
    const place = job.status === "queued" ? (job.queue_position ?? "") : "";
    const key = `${job.id}:${job.status}:${quarter}:${place}`;
    if (key === state.announced) return;
    state.announced = key;
    $("job-status").textContent = statusText(job);
  }

  function updateProgress(job) {
    const progress = Math.min(Math.max(Number(job.progress) || 0, 0), 1);
    $("job-progress").value = progress;
    $("job-percent").textContent = `${Math.round(progress * 100)}%`;
    $("job").dataset.status = job.status;
    $("cancel").hidden = TERMINAL.has(job.status);
    announce({ ...job, progress });
  }

  function describe(job) {
    const p = job.params;
    const parts = [
      `${p.width}×${p.height}`,
      `${p.num_inference_steps} steps`,
      `guidance ${p.guidance_scale}`,
      `seed ${p.seed}`,
      `${p.num_images} image${p.num_images === 1 ? "" : "s"}`,
      `model ${job.model}`,
      `submitted ${new Date(job.created_at).toLocaleString()}`,
    ];
    if (job.finished_at && job.started_at) {
      const seconds = (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
      parts.push(`ran ${seconds.toFixed(1)} s`);
    }
    if (p.negative_prompt) parts.push(`negative: “${p.negative_prompt}”`);
    return parts.join(" · ");
  }

  function renderImages(job) {
    const box = $("job-images");
    const signature = `${job.id}:${job.images.length}`;
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    box.replaceChildren(
      ...job.images.map((image, i) => {
        const figure = document.createElement("figure");
        const link = document.createElement("a");
        link.href = image.url;
        link.target = "_blank";
        link.rel = "noopener";
        const img = document.createElement("img");
        img.src = image.url;
        img.width = image.width;
        img.height = image.height;
        img.alt = `Image ${i + 1} of ${job.images.length} for the prompt “${job.params.prompt}”, seed ${image.seed}`;
        img.decoding = "async";
        link.append(img);
        const caption = document.createElement("figcaption");
        caption.textContent = `${image.width}×${image.height}, seed ${image.seed} (link expires ${new Date(image.expires_at).toLocaleTimeString()})`;
        figure.append(link, caption);
        return figure;
      }),
    );
  }

  function showJob(job) {
    const previous = state.job;
    state.job = job;
    $("job").hidden = false;
    $("job").dataset.jobId = job.id;
    $("job-id").textContent = job.id;
    $("job-prompt").textContent = `“${job.params.prompt}”`;
    $("job-details").textContent = describe(job);
    updateProgress(job);
    renderImages(job);
    for (const button of $("recent-list").querySelectorAll("button")) {
      button.setAttribute("aria-current", String(button.dataset.jobId === job.id));
    }
    const finishedNow =
      previous?.id === job.id && !TERMINAL.has(previous.status) && TERMINAL.has(job.status);
    if (finishedNow) refreshRecent(false);
  }

  function stopFollowing() {
    state.follow?.abort();
    state.follow = null;
  }

  function follow(job) {
    stopFollowing();
    if (TERMINAL.has(job.status)) return;
    const controller = new AbortController();
    state.follow = controller;
    const { signal } = controller;
    (async () => {
      try {
        if (!(await streamEvents(job.id, signal))) await poll(job.id, signal);
      } catch (err) {
        if (!signal.aborted) showError(err, "Lost track of the job");
      }
    })();
  }

  async function openJob(id, { focus = true } = {}) {
    clearErrors();
    try {
      const job = await api(jobPath(id));
      showJob(job);
      follow(job);
      history.replaceState(null, "", `#job/${encodeURIComponent(id)}`);
      if (focus) $("job-heading").focus();
    } catch (err) {
      showError(err, "The job could not be opened");
    }
  }

  async function cancelJob() {
    const job = state.job;
    if (!job) return;
    clearErrors();
    const button = $("cancel");
    button.disabled = true;
    try {
      showJob(await api(jobPath(job.id), { method: "DELETE" }));
    } catch (err) {
      showError(err, "The job was not canceled");
    } finally {
      button.disabled = false;
    }
  }

  // --- live progress: Server-Sent Events read with fetch (EventSource cannot send the
  //     Authorization header), polling when streaming is not possible ---

  async function* serverSentEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) yield { ...event, data: event.data.join("\n") };
            else if (event.retry) yield event;
            event = { data: [] };
            continue;
          }
          if (line.startsWith(":")) continue; // a keep-alive comment
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let value = colon === -1 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") event.data.push(value);
          else if (field === "event") event.event = value;
          else if (field === "id") event.id = value;
          else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // True once the terminal event arrived; false when streaming does not work here (the
  // caller then polls). Throws the API's problem for a job that is gone or a bad key.
  async function streamEvents(id, signal) {
    let lastEventId = null;
    let retryMs = 2000;
    let failures = 0;
    let live = null; // the job as the events tell it: progress and place in line
    for (;;) {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      let response;
      try {
        response = await fetch(`${jobPath(id)}/events`, { headers, signal, cache: "no-store" });
      } catch (err) {
        if (signal.aborted) throw err;
        return false;
      }
      if (response.status === 401 || response.status === 404) throw await problemFrom(response);
      if (!response.ok || !response.body) return false;
      try {
        for await (const event of serverSentEvents(response.body)) {
          if (event.id !== undefined) lastEventId = event.id;
          if (event.retry) retryMs = event.retry;
          if (event.event === "status") {
            showJob(JSON.parse(event.data));
            return true;
          }
          if (event.event === "progress" && state.job?.id === id) {
            const data = JSON.parse(event.data);
            live = { ...(live ?? state.job), ...data };
            if (data.status !== "queued") Object.assign(live, NOT_IN_LINE);
            updateProgress(live);
          } else if (event.event === "queue" && state.job?.id === id) {
            const data = JSON.parse(event.data);
            live = {
              ...(live ?? state.job),
              status: "queued",
              queue_position: data.queue_position,
              estimated_start_at: data.estimated_start_at,
            };
            updateProgress(live);
          }
        }
      } catch (err) {
        if (signal.aborted) throw err;
        failures += 1;
        if (failures >= STREAM_FAILURES_BEFORE_POLLING) return false;
      }
      // The stream ended before the job did (a server-side limit or a proxy): resume.
      await sleep(retryMs, signal);
    }
  }

  async function poll(id, signal) {
    let delayMs = 0;
    for (;;) {
      if (delayMs) await sleep(delayMs, signal);
      const started = Date.now();
      try {
        const job = await api(jobPath(id), { headers: { Prefer: `wait=${POLL_WAIT_S}` }, signal });
        showJob(job);
        if (TERMINAL.has(job.status)) return;
        delayMs = Math.max(0, MIN_POLL_MS - (Date.now() - started));
      } catch (err) {
        if (signal.aborted) throw err;
        if (err instanceof ApiError && err.status === 429) {
          showError(err, "Slowing down");
          delayMs = (err.retryAfter || 1) * 1000;
        } else if (err instanceof ApiError && err.status < 500) {
          throw err;
        } else {
          delayMs = Math.min(Math.max(delayMs * 2, 1000), 15000);
        }
      }
    }
  }

  // --- recent jobs ---

  function recentItem(job) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.jobId = job.id;
    button.setAttribute("aria-current", String(state.job?.id === job.id));
    let thumb;
    if (job.images.length) {
      thumb = document.createElement("img");
      thumb.src = job.images[0].url;
      thumb.alt = ""; // the button's text names the job
      thumb.loading = "lazy";
      thumb.width = 40;
      thumb.height = 40;
    } else {
      thumb = document.createElement("span");
      thumb.className = "thumb";
    }
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = job.params.prompt;
    const badge = document.createElement("span");
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status;
    const when = document.createElement("time");
    when.className = "when";
    when.dateTime = job.created_at;
    when.textContent = new Date(job.created_at).toLocaleString();
    button.append(thumb, text, badge, when);
    button.addEventListener("click", () => openJob(job.id));
    item.append(button);
    return item;
  }

  async function loadRecent(reset) {
    if (reset) {
      state.cursors = [null];
      state.page = 0;
    }
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const cursor = state.cursors[state.page];
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/v1/jobs?${query}`);
    state.nextCursor = page.next_cursor;
    $("recent-list").replaceChildren(...page.items.map(recentItem));
    $("recent-empty").hidden = page.items.length > 0 || state.page > 0;
    $("newer").disabled = state.page === 0;
    $("older").disabled = !state.nextCursor;
    $("page-label").textContent = `Page ${state.page + 1}`;
  }

  function refreshRecent(reset) {
    loadRecent(reset).catch((err) => showError(err, "Recent jobs could not be loaded"));
  }

  function turnPage(step) {
    if (step > 0) state.cursors[state.page + 1] = state.nextCursor;
    state.page = Math.max(0, state.page + step);
    refreshRecent(false);
  }

  // --- start ---

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (key) useKey(key).then((ok) => ok && $("prompt").focus());
    });
    $("forget-key").addEventListener("click", forgetKey);
    $("job-form").addEventListener("submit", submitJob);
    $("cancel").addEventListener("click", cancelJob);
    $("refresh").addEventListener("click", () => refreshRecent(false));
    $("older").addEventListener("click", () => turnPage(1));
    $("newer").addEventListener("click", () => turnPage(-1));
    $("job-form").addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));

    const saved = sessionStorage.getItem(KEY_STORAGE);
    renderKey();
    if (!saved) {
      $("api-key").focus();
      return;
    }
    useKey(saved).then((ok) => {
      const match = /^#job\/(.+)$/.exec(location.hash);
      if (ok && match) openJob(decodeURIComponent(match[1]), { focus: false });
    });
  }

  start();
})();
