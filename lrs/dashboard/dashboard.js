// The LRS progress dashboard: plain ES module, no framework, nothing fetched but this LRS's API.
//
// Data flow for a course: open the SSE stream first; once the server has subscribed us (its
// first bytes), load the snapshot (the course definition and every progress record, following
// `more`), buffering stream events meanwhile; then apply events as they come. Records carry
// `updated_at` and `version`, so an older copy never replaces a newer one whatever the order.
// On a dropped stream, reconnect with back-off and Last-Event-ID; the server replays what
// changed since. Text from the API is only ever inserted with textContent or attributes.

const STATUSES = ["completed", "in_progress", "started", "not_started"];
const LABELS = {
  not_started: "not started",
  started: "started",
  in_progress: "in progress",
  completed: "completed",
};
const AUTH_STORAGE = "lrs.dashboard.auth";
const COURSE_STORAGE = "lrs.dashboard.course";
const PAGE_SIZE = 1000;
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
// The server sends a keep-alive comment every 15 s; silence for longer means a dead link.
const SILENCE_MS = 45000;
// If a proxy holds back the stream's first bytes, load the snapshot anyway after this.
const SNAPSHOT_FALLBACK_MS = 4000;

// The dashboard is served at <api>/dashboard/, so the API root is one level up.
const API_ROOT = new URL("../", document.baseURI);

const $ = (id) => document.getElementById(id);

const state = {
  auth: null, // {key, secret}
  courses: [],
  session: null, // the open course, see openCourse()
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function basicAuth({ key, secret }) {
  const bytes = new TextEncoder().encode(`${key}:${secret}`);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return `Basic ${btoa(binary)}`;
}

function apiUrl(path) {
  return new URL(path, API_ROOT);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJSON(url, signal) {
  const response = await fetch(url, {
    headers: { Authorization: basicAuth(state.auth), Accept: "application/json" },
    // "omit": no cookies, and no browser login prompt on a 401 with a Basic challenge.
    credentials: "omit",
    cache: "no-store",
    signal,
  });
  if (!response.ok) {
    let message = response.statusText || `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message);
  }
  return response.json();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      window.removeEventListener("online", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
    window.addEventListener("online", done, { once: true });
  });
}

function shortIri(iri) {
  const trimmed = String(iri).replace(/[/#]+$/, "");
  const tail = trimmed.split(/[/#:]/).pop();
  return tail || String(iri);
}

function learnerLabel(key) {
  // Learner keys: mbox:mailto:a@b.c, mbox_sha1sum:<hex>, openid:<uri>, account:<home>|<name>
  if (key.startsWith("mbox:mailto:")) return key.slice("mbox:mailto:".length);
  if (key.startsWith("account:")) return key.slice(key.indexOf("|") + 1) || key;
  if (key.startsWith("mbox_sha1sum:")) return `sha1 ${key.slice(13, 21)}…`;
  if (key.startsWith("openid:")) return key.slice(7);
  return key;
}

// Microseconds since the epoch from the record's updated_at ("…T10:00:00.123456+00:00").
function updatedMicros(record) {
  const text = record.updated_at;
  if (typeof text !== "string") return 0;
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(.*)$/.exec(text);
  if (!match) return Date.parse(text) * 1000 || 0;
  const seconds = Date.parse(match[1] + (match[3] || "Z"));
  return seconds * 1000 + Number((match[2] || "").padEnd(6, "0"));
}

function isNewer(incoming, current) {
  if (!current) return true;
  const a = updatedMicros(incoming);
  const b = updatedMicros(current);
  if (a !== b) return a > b;
  return (incoming.version ?? 0) >= (current.version ?? 0);
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// ---------------------------------------------------------------------------------------------
// Connection indicator

function setConnection(kind, text) {
  const box = $("connection");
  box.dataset.state = kind;
  $("connection-text").textContent = text;
}

// ---------------------------------------------------------------------------------------------
// text/event-stream parsing (https://html.spec.whatwg.org/multipage/server-sent-events.html)

export class EventStreamParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.retry = null;
    this.first = true;
  }

  push(text) {
    this.buffer += text;
    if (this.first && this.buffer.length) {
      if (this.buffer.charCodeAt(0) === 0xfeff) this.buffer = this.buffer.slice(1);
      this.first = false;
    }
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end < 0) return;
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (this.buffer[end] === "\r" && end === this.buffer.length - 1) return;
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  dispatch() {
    const data = this.data;
    const type = this.type || "message";
    this.data = [];
    this.type = "";
    if (data.length === 0) return;
    this.onEvent({ type, data: data.join("\n"), lastEventId: this.lastEventId });
  }
}

// ---------------------------------------------------------------------------------------------
// Sign-in

function loadAuth() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(AUTH_STORAGE) || "null");
    if (saved && typeof saved.key === "string" && typeof saved.secret === "string") return saved;
  } catch {
    // ignore a malformed entry
  }
  return null;
}

function authMessage(error) {
  if (error instanceof ApiError && error.status === 401) return "The key or secret is wrong.";
  if (error instanceof ApiError && error.status === 403) {
    return "This credential lacks the progress/read scope.";
  }
  return `Could not reach the LRS: ${error.message}`;
}

async function signIn(auth, { quiet = false } = {}) {
  state.auth = auth;
  try {
    const body = await getJSON(apiUrl("courses"));
    state.courses = Array.isArray(body.courses) ? body.courses : [];
  } catch (error) {
    state.auth = null;
    if (!quiet) {
      const box = $("sign-in-error");
      box.textContent = authMessage(error);
      box.hidden = false;
    }
    showSignIn();
    return false;
  }
  sessionStorage.setItem(AUTH_STORAGE, JSON.stringify(auth));
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  const who = $("who");
  who.textContent = `Key ${auth.key}`;
  who.hidden = false;
  renderCoursePicker();
  $("course-meta").textContent = state.courses.length
    ? ""
    : "No course yet: define one with PUT /courses/{courseId} or POST /courses/import.";
  const wanted = sessionStorage.getItem(COURSE_STORAGE);
  if (wanted && state.courses.some((c) => c.id === wanted)) {
    $("course").value = wanted;
    openCourse(wanted);
  } else if (state.courses.length === 1) {
    $("course").value = state.courses[0].id;
    openCourse(state.courses[0].id);
  }
  return true;
}

function showSignIn() {
  closeCourse();
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  setConnection("idle", "Not connected");
  $("key").focus();
}

function signOut(message) {
  sessionStorage.removeItem(AUTH_STORAGE);
  sessionStorage.removeItem(COURSE_STORAGE);
  state.auth = null;
  state.courses = [];
  renderCoursePicker();
  $("secret").value = "";
  const box = $("sign-in-error");
  box.textContent = message || "";
  box.hidden = !message;
  showSignIn();
}

function renderCoursePicker() {
  const select = $("course");
  const current = select.value;
  const options = [el("option", { value: "" }, "Choose a course…")];
  const sorted = [...state.courses].sort((a, b) =>
    (a.title || a.id).localeCompare(b.title || b.id),
  );
  const titles = new Map();
  for (const course of sorted) titles.set(course.title, (titles.get(course.title) || 0) + 1);
  for (const course of sorted) {
    // The title alone, unless it is missing or shared: then the IRI tells them apart.
    const unique = course.title && titles.get(course.title) === 1;
    const label = unique ? course.title : course.title ? `${course.title} (${course.id})` : course.id;
    options.push(el("option", { value: course.id, title: course.id }, label));
  }
  select.replaceChildren(...options);
  if (state.courses.some((c) => c.id === current)) select.value = current;
}

// ---------------------------------------------------------------------------------------------
// A course session: snapshot + live stream

function closeCourse() {
  const session = state.session;
  state.session = null;
  if (session) {
    session.abort.abort();
    clearTimeout(session.renderTimer);
    clearTimeout(session.courseTimer);
  }
  $("course-view").hidden = true;
  $("refresh").disabled = true;
  $("course-meta").textContent = "";
  showError("");
}

function openCourse(courseId) {
  closeCourse();
  if (!courseId) {
    sessionStorage.removeItem(COURSE_STORAGE);
    setConnection("idle", "Not connected");
    return;
  }
  sessionStorage.setItem(COURSE_STORAGE, courseId);
  const summary = state.courses.find((c) => c.id === courseId);
  const session = {
    courseId,
    abort: new AbortController(),
    course: summary ? normaliseCourse(summary) : { id: courseId, title: "", modules: [] },
    records: new Map(), // learner \u0000 module -> record
    cells: new Map(), // learner \u0000 module -> <td>
    rows: new Map(), // learner -> <tr>
    lastEventId: null,
    loading: false,
    loaded: false,
    buffered: [],
    snapshotToken: 0,
    dirty: { structure: true, cells: new Set() },
    renderTimer: null,
    courseTimer: null,
    updatedAt: null,
  };
  state.session = session;
  $("course-view").hidden = false;
  $("refresh").disabled = false;
  $("course-meta").textContent = "Loading…";
  render(session);
  runStream(session);
  // Show the data even when the stream's first bytes are held back (e.g. by a proxy).
  setTimeout(() => {
    if (state.session === session && !session.loaded && !session.loading) loadSnapshot(session);
  }, SNAPSHOT_FALLBACK_MS);
}

function normaliseCourse(course) {
  const modules = (course.modules || []).map((m) => ({
    id: m.id,
    title: m.title || shortIri(m.id),
  }));
  return { id: course.id, title: course.title || "", modules };
}

const recordKey = (learner, module) => `${learner}\u0000${module}`;

async function loadSnapshot(session) {
  const token = ++session.snapshotToken;
  session.loading = true;
  session.buffered = [];
  const signal = session.abort.signal;
  try {
    const coursePromise = getJSON(apiUrl(`courses/${encodeURIComponent(session.courseId)}`), signal);
    const records = [];
    let next = apiUrl(
      `progress?${new URLSearchParams({ course: session.courseId, limit: String(PAGE_SIZE) })}`,
    );
    while (next) {
      const page = await getJSON(next, signal);
      records.push(...(page.records || []));
      next = page.more ? new URL(page.more, API_ROOT) : null;
    }
    const course = await coursePromise;
    if (state.session !== session || token !== session.snapshotToken) return;
    session.course = normaliseCourse(course);
    const fresh = new Map();
    for (const record of records) {
      if (record.course === session.courseId) {
        fresh.set(recordKey(record.learner, record.module), record);
      }
    }
    session.records = fresh;
    const buffered = session.buffered;
    session.buffered = [];
    session.loading = false;
    session.loaded = true;
    for (const record of buffered) applyRecord(session, record);
    session.updatedAt = new Date();
    session.dirty.structure = true;
    scheduleRender(session);
    showError("");
  } catch (error) {
    if (signal.aborted || token !== session.snapshotToken) return;
    session.loading = false;
    if (error instanceof ApiError && error.status === 401) {
      signOut("The LRS no longer accepts this credential; sign in again.");
      return;
    }
    if (error instanceof ApiError && error.status === 404) {
      showError("This course no longer exists.");
      return;
    }
    showError(`Could not load the course: ${error.message}`);
  }
}

function applyRecord(session, record) {
  if (!record || record.course !== session.courseId) return;
  if (session.loading) {
    session.buffered.push(record);
    return;
  }
  const key = recordKey(record.learner, record.module);
  const current = session.records.get(key);
  if (!isNewer(record, current)) return;
  session.records.set(key, record);
  session.updatedAt = new Date();
  const knownModule = session.course.modules.some((m) => m.id === record.module);
  if (!knownModule) {
    // A module added to the course (or discovered from statements): fetch the definition.
    clearTimeout(session.courseTimer);
    session.courseTimer = setTimeout(() => refreshCourse(session), 300);
  }
  if (!current || !session.cells.has(key)) session.dirty.structure = true;
  else session.dirty.cells.add(key);
  scheduleRender(session);
}

async function refreshCourse(session) {
  try {
    const course = await getJSON(
      apiUrl(`courses/${encodeURIComponent(session.courseId)}`),
      session.abort.signal,
    );
    if (state.session !== session) return;
    session.course = normaliseCourse(course);
    session.dirty.structure = true;
    scheduleRender(session);
  } catch {
    // the next event or reconnect tries again
  }
}

async function runStream(session) {
  const signal = session.abort.signal;
  let delay = FIRST_DELAY_MS;
  let attempts = 0;
  while (!signal.aborted) {
    setConnection("connecting", attempts ? "Reconnecting…" : "Connecting…");
    const link = new AbortController();
    const stop = () => link.abort();
    signal.addEventListener("abort", stop, { once: true });
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(stop, SILENCE_MS);
    };
    let retryHint = null;
    try {
      const headers = { Authorization: basicAuth(state.auth), Accept: "text/event-stream" };
      if (session.lastEventId) headers["Last-Event-ID"] = session.lastEventId;
      const url = apiUrl(`progress/stream?${new URLSearchParams({ course: session.courseId })}`);
      watch();
      const response = await fetch(url, {
        headers,
        credentials: "omit",
        cache: "no-store",
        signal: link.signal,
      });
      if (response.status === 401) {
        signOut("The LRS no longer accepts this credential; sign in again.");
        return;
      }
      if (response.status === 403) {
        setConnection("offline", "No access");
        showError("This credential lacks the progress/read scope.");
        return;
      }
      if (response.status === 400 && session.lastEventId) {
        session.lastEventId = null; // not resumable: start over from a snapshot
        throw new Error("the stream refused the resume point");
      }
      if (!response.ok || !response.body) throw new Error(`the stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new EventStreamParser((event) => {
        if (event.type === "progress") {
          let record = null;
          try {
            record = JSON.parse(event.data);
          } catch {
            return;
          }
          applyRecord(session, record);
        }
        if (event.lastEventId) session.lastEventId = event.lastEventId;
      });
      let open = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        if (!open) {
          open = true;
          delay = FIRST_DELAY_MS;
          attempts = 0;
          setConnection("live", "Live");
          // Subscribed now: a snapshot taken from here on misses nothing. With a resume point
          // the server replays the changes instead.
          if (!session.lastEventId || !session.loaded) loadSnapshot(session);
        }
        parser.push(value);
        retryHint = parser.retry;
      }
      throw new Error("the stream ended");
    } catch (error) {
      if (signal.aborted) return;
      if (!session.loaded && !session.loading) loadSnapshot(session);
    } finally {
      clearTimeout(silence);
      signal.removeEventListener("abort", stop);
    }
    attempts += 1;
    const base = retryHint ?? delay;
    const wait = Math.round(base * (0.75 + Math.random() * 0.5));
    delay = Math.min(delay * 2, MAX_DELAY_MS);
    const seconds = Math.max(1, Math.round(wait / 1000));
    setConnection("offline", `Offline — retrying in ${seconds} s`);
    await sleep(wait, signal);
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

function scheduleRender(session) {
  if (session.renderTimer !== null) return;
  session.renderTimer = setTimeout(() => {
    session.renderTimer = null;
    if (state.session === session) render(session);
  }, 30);
}

function learnersOf(session) {
  const learners = new Map();
  for (const record of session.records.values()) {
    const known = learners.get(record.learner);
    if (!known || (!known.name && record.learner_name)) {
      learners.set(record.learner, { key: record.learner, name: record.learner_name || "" });
    }
  }
  return [...learners.values()].sort(
    (a, b) =>
      (a.name || learnerLabel(a.key)).localeCompare(b.name || learnerLabel(b.key)) ||
      a.key.localeCompare(b.key),
  );
}

function render(session) {
  const learners = learnersOf(session);
  const modules = session.course.modules;
  if (session.dirty.structure) {
    renderGrid(session, learners, modules);
  } else {
    for (const key of session.dirty.cells) {
      const cell = session.cells.get(key);
      if (cell) fillCell(cell, session.records.get(key), true);
    }
    for (const learner of learners) updateRowTotal(session, learner.key, modules);
  }
  session.dirty.structure = false;
  session.dirty.cells.clear();
  renderChart(session, learners, modules);
  renderMeta(session, learners, modules);
}

function renderMeta(session, learners, modules) {
  const course = session.course;
  $("course-meta").textContent = session.loaded
    ? `${course.id} · ${learners.length} learner${learners.length === 1 ? "" : "s"}` +
      ` · ${modules.length} module${modules.length === 1 ? "" : "s"}`
    : "Loading…";
  $("grid-meta").textContent = session.updatedAt
    ? `Last change ${session.updatedAt.toLocaleTimeString()}`
    : "";
}

function renderGrid(session, learners, modules) {
  const table = $("grid");
  const headRow = el("tr", {}, el("th", { scope: "col", className: "learner-col" }, "Learner"));
  for (const module of modules) {
    headRow.append(
      el("th", { scope: "col", title: module.id, "data-module": module.id }, module.title),
    );
  }
  headRow.append(el("th", { scope: "col", className: "total-col" }, "Completed"));
  table.tHead.replaceChildren(headRow);

  session.cells = new Map();
  session.rows = new Map();
  const rows = [];
  for (const learner of learners) {
    const label = learner.name || learnerLabel(learner.key);
    const header = el(
      "th",
      { scope: "row", className: "learner", title: learner.key, "data-learner": learner.key },
      el("span", { className: "learner-name" }, label),
    );
    if (learner.name) {
      header.append(el("span", { className: "learner-key" }, learnerLabel(learner.key)));
    }
    const row = el("tr", { "data-learner": learner.key }, header);
    for (const module of modules) {
      const key = recordKey(learner.key, module.id);
      const cell = el("td", { "data-learner": learner.key, "data-module": module.id });
      cell.dataset.moduleTitle = module.title;
      cell.dataset.learnerLabel = label;
      fillCell(cell, session.records.get(key), session.dirty.cells.has(key));
      session.cells.set(key, cell);
      row.append(cell);
    }
    row.append(el("td", { className: "total" }));
    session.rows.set(learner.key, row);
    rows.push(row);
  }
  table.tBodies[0].replaceChildren(...rows);
  for (const learner of learners) updateRowTotal(session, learner.key, modules);
  const empty = learners.length === 0;
  $("grid-empty").hidden = !(empty && session.loaded);
  table.hidden = empty;
}

function fillCell(cell, record, flash) {
  const status = record && LABELS[record.status] ? record.status : "not_started";
  const previous = cell.dataset.status;
  cell.dataset.status = status;
  cell.className = `cell status-${status}`;
  const children = [el("span", { className: "status-label" }, LABELS[status])];
  const percent = record && Number.isFinite(record.percent) ? record.percent : 0;
  if ((status === "started" || status === "in_progress") && percent > 0) {
    children.push(" ", el("span", { className: "percent" }, `${Math.round(percent)}%`));
  }
  cell.replaceChildren(...children);
  const details = [`${cell.dataset.learnerLabel} — ${cell.dataset.moduleTitle}: ${LABELS[status]}`];
  if (record) {
    if (record.percent !== undefined) details.push(`${record.percent}% of required items`);
    if (record.best_score !== undefined && record.best_score !== null) {
      details.push(`best score ${record.best_score}`);
    }
    if (record.completed_at) details.push(`completed ${formatTime(record.completed_at)}`);
    else if (record.started_at) details.push(`started ${formatTime(record.started_at)}`);
    if (record.waived) details.push("waived");
  }
  cell.title = details.join("\n");
  if (flash && previous && previous !== status) {
    cell.classList.remove("changed");
    void cell.offsetWidth; // restart the animation
    cell.classList.add("changed");
  }
}

function updateRowTotal(session, learnerKey, modules) {
  const row = session.rows.get(learnerKey);
  if (!row) return;
  const done = modules.filter(
    (m) => session.records.get(recordKey(learnerKey, m.id))?.status === "completed",
  ).length;
  const cell = row.lastElementChild;
  cell.textContent = `${done} / ${modules.length}`;
  cell.classList.toggle("all-done", modules.length > 0 && done === modules.length);
}

function renderChart(session, learners, modules) {
  const chart = $("chart");
  if (modules.length === 0) {
    chart.replaceChildren(el("p", { className: "empty" }, session.loaded ? "No modules." : "…"));
    return;
  }
  const total = learners.length;
  const list = el("ul", { className: "bars" });
  for (const module of modules) {
    const counts = { not_started: 0, started: 0, in_progress: 0, completed: 0 };
    for (const learner of learners) {
      const status = session.records.get(recordKey(learner.key, module.id))?.status;
      counts[LABELS[status] ? status : "not_started"] += 1;
    }
    const rate = total ? Math.round((100 * counts.completed) / total) : 0;
    const bar = el("div", { className: "bar", "aria-hidden": "true" });
    for (const status of STATUSES) {
      if (!counts[status]) continue;
      const segment = el("span", {
        className: `segment status-${status}`,
        title: `${LABELS[status]}: ${counts[status]}`,
      });
      segment.style.width = `${(100 * counts[status]) / total}%`;
      bar.append(segment);
    }
    const breakdown = STATUSES.filter((s) => counts[s])
      .map((s) => `${counts[s]} ${LABELS[s]}`)
      .join(", ");
    list.append(
      el(
        "li",
        { className: "bar-row", "data-module": module.id },
        el("span", { className: "bar-label", title: module.id }, module.title),
        bar,
        el(
          "span",
          { className: "bar-value" },
          el("strong", {}, `${rate}%`),
          ` ${counts.completed} of ${total}`,
        ),
        el("span", { className: "visually-hidden" }, breakdown ? ` (${breakdown})` : ""),
      ),
    );
  }
  chart.replaceChildren(list);
}

// ---------------------------------------------------------------------------------------------
// Wiring

function init() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("sign-in-button");
    button.disabled = true;
    $("sign-in-error").hidden = true;
    const auth = { key: $("key").value.trim(), secret: $("secret").value };
    try {
      await signIn(auth);
    } finally {
      button.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("course").addEventListener("change", (event) => openCourse(event.target.value));
  $("refresh").addEventListener("click", async () => {
    const session = state.session;
    try {
      const body = await getJSON(apiUrl("courses"));
      state.courses = Array.isArray(body.courses) ? body.courses : [];
      renderCoursePicker();
    } catch {
      // the snapshot below reports errors
    }
    if (session && state.session === session) loadSnapshot(session);
  });
  const saved = loadAuth();
  if (saved) {
    $("key").value = saved.key;
    signIn(saved, { quiet: true });
  } else {
    showSignIn();
  }
}

init();
