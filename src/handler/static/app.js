// Threadline's chat page: plain JavaScript on the API's own endpoints, same origin.
//
// State that survives a reload lives in localStorage: the API key (only when the API
// asked for one), the current session id and the chosen model. The conversation
// itself is always read back from the API (GET /v1/sessions/{id}/messages). An answer
// still streaming in when the page reloads is resumed from the server (see "answers"),
// from a record in this tab's sessionStorage.
//
// Every piece of text from the API or the person is put into the page with
// textContent / append(string) or through the Markdown renderer, which does the same.

import { renderMarkdown } from "./markdown.js";

// The API's base URL is where this page is served from: `/` locally, `/prod/` behind
// API Gateway's stage. Every request is made relative to it, on the same origin.
const API_BASE = new URL("../", import.meta.url);
const SESSION_HEADER = "X-Hermes-Session-Id";
const RESUMABLE_HEADER = "X-Threadline-Resumable";
const STREAM_ID_HEADER = "X-Threadline-Stream-Id";
const STORAGE_KEYS = {
  apiKey: "threadline.apiKey",
  session: "threadline.sessionId",
  model: "threadline.model",
};
const SESSIONS_PAGE = 20;
const MESSAGES_PAGE = 100;
const MAX_MESSAGE_PAGES = 50;

// ---------------------------------------------------------------- small helpers

/** localStorage or sessionStorage, by name, as a store that never throws. */
function webStorage(kind) {
  return {
    get(name) {
      try {
        return window[kind].getItem(name);
      } catch {
        return null;
      }
    },
    set(name, value) {
      try {
        window[kind].setItem(name, value);
      } catch {
        // Storage can be unavailable (private modes, quotas): the page still works.
      }
    },
    remove(name) {
      try {
        window[kind].removeItem(name);
      } catch {
        // See set().
      }
    },
  };
}

const storage = webStorage("localStorage"); // this browser: key, session, model
const tabStorage = webStorage("sessionStorage"); // this tab: the answer streaming in

/** An element with attributes and children (strings become text nodes). */
function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name === "class") {
      node.className = value;
    } else if (name === "text") {
      node.textContent = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function byId(id) {
  return document.getElementById(id);
}

const ui = {
  app: byId("app"),
  sidebar: byId("sidebar"),
  scrim: byId("scrim"),
  openSidebar: byId("open-sidebar"),
  closeSidebar: byId("close-sidebar"),
  newChat: byId("new-chat"),
  sessionList: byId("session-list"),
  sessionsStatus: byId("sessions-status"),
  moreSessions: byId("more-sessions"),
  model: byId("model"),
  keyButton: byId("key-button"),
  conversation: byId("conversation"),
  welcome: byId("welcome"),
  messages: byId("messages"),
  composer: byId("composer"),
  prompt: byId("prompt"),
  send: byId("send"),
  stop: byId("stop"),
  announcer: byId("announcer"),
  keyDialog: byId("key-dialog"),
  keyForm: byId("key-form"),
  keyReason: byId("key-reason"),
  keyInput: byId("key-input"),
  keyState: byId("key-state"),
  keyForget: byId("key-forget"),
  keyCancel: byId("key-cancel"),
};

const state = {
  sessionId: storage.get(STORAGE_KEYS.session),
  titles: new Map(), // session id -> title, from the sidebar
  streaming: null, // {answer, controller, stop} while an answer streams in (runAnswer)
  leaving: false, // the page is being unloaded
  view: 0, // bumped whenever the conversation shown changes; late answers are dropped
  sessionsLoad: 0,
  sessionsCursor: null,
  keyDeclined: false, // the person cancelled the key prompt: loads stop asking
};

function announce(text) {
  ui.announcer.textContent = "";
  window.setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function relativeTime(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) {
    return "";
  }
  const diff = seconds * 1000 - Date.now();
  const abs = Math.abs(diff);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  if (abs < 60_000) {
    return "just now";
  }
  if (abs < 3_600_000) {
    return format.format(Math.round(diff / 60_000), "minute");
  }
  if (abs < 86_400_000) {
    return format.format(Math.round(diff / 3_600_000), "hour");
  }
  if (abs < 7 * 86_400_000) {
    return format.format(Math.round(diff / 86_400_000), "day");
  }
  return new Date(seconds * 1000).toLocaleDateString();
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor({ status = 0, message = "", code = null, type = null, param = null } = {}) {
    super(message || "The request failed.");
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
  }
}

function isAbort(error) {
  return error instanceof DOMException && error.name === "AbortError";
}

/** The API error in a failed response (OpenAI's `{"error": {...}}`), or a generic one. */
async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail = body && typeof body === "object" && body.error && typeof body.error === "object" ? body.error : {};
  const message =
    typeof detail.message === "string" && detail.message
      ? detail.message
      : `The API answered ${response.status} ${response.statusText}`.trim();
  return new ApiError({
    status: response.status,
    message,
    code: typeof detail.code === "string" ? detail.code : null,
    type: typeof detail.type === "string" ? detail.type : null,
    param: typeof detail.param === "string" ? detail.param : null,
  });
}

/**
 * fetch() on the API with the saved key. A 401 asks for a key (once, however many
 * requests are waiting) and retries with it; `askAlways` asks even if the person
 * has cancelled the prompt before (for what they just did, like sending).
 */
async function apiFetch(path, { method = "GET", headers = {}, body, signal, askAlways = false } = {}) {
  for (;;) {
    const key = storage.get(STORAGE_KEYS.apiKey);
    const sent = { Accept: "application/json", ...headers };
    if (key) {
      sent.Authorization = `Bearer ${key}`;
    }
    let response;
    try {
      response = await fetch(new URL(path, API_BASE), { method, headers: sent, body, signal, cache: "no-store" });
    } catch (error) {
      if (isAbort(error)) {
        throw error;
      }
      throw new ApiError({ message: "Could not reach the API. Check the connection and try again.", code: "network_error" });
    }
    if (response.status !== 401) {
      return response;
    }
    const refused = await errorFrom(response);
    if (storage.get(STORAGE_KEYS.apiKey) !== key) {
      continue; // the key changed while this request was on its way: try the new one
    }
    if (!(await askForKey(refused.message, { always: askAlways }))) {
      throw refused;
    }
  }
}

async function apiJson(path, options = {}) {
  const response = await apiFetch(path, options);
  if (!response.ok) {
    throw await errorFrom(response);
  }
  try {
    return await response.json();
  } catch {
    throw new ApiError({ status: response.status, message: "The API sent an answer this page cannot read." });
  }
}

/** The `data:` payloads of a server-sent event stream, as they arrive. */
async function* serverSentData(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  function* take(line) {
    if (line === "") {
      if (data.length) {
        yield data.join("\n");
        data = [];
      }
      return;
    }
    if (line.startsWith(":")) {
      return; // a comment, such as `: keepalive`
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "data") {
      data.push(value);
    }
  }
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        yield* take(line);
      }
    }
    yield* take(buffer);
    yield* take("");
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---------------------------------------------------------------- API key

let keyPrompt = null; // the pending prompt's promise, shared by every waiting request
let keyResolve = null;

function askForKey(reason, { always = false } = {}) {
  if (!always && state.keyDeclined) {
    return Promise.resolve(false);
  }
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      keyResolve = resolve;
      openKeyDialog(reason);
    }).finally(() => {
      keyPrompt = null;
    });
  }
  return keyPrompt;
}

function openKeyDialog(reason = "") {
  const saved = storage.get(STORAGE_KEYS.apiKey);
  ui.keyReason.textContent = reason;
  ui.keyState.textContent = saved ? "A key is saved in this browser." : "No key is saved in this browser.";
  ui.keyForget.disabled = !saved;
  ui.keyInput.value = "";
  if (!ui.keyDialog.open) {
    ui.keyDialog.showModal();
  }
  ui.keyInput.focus();
}

function updateKeyButton() {
  const saved = Boolean(storage.get(STORAGE_KEYS.apiKey));
  ui.keyButton.textContent = saved ? "API key ✓" : "API key";
  ui.keyButton.title = saved ? "A key is saved in this browser: change or forget it" : "Set an API key";
}

/** Close the key dialog: a prompt that was waiting learns whether a key was saved. */
function finishKeyDialog(saved) {
  if (ui.keyDialog.open) {
    ui.keyDialog.close();
  }
  const resolve = keyResolve;
  keyResolve = null;
  if (resolve) {
    if (!saved) {
      state.keyDeclined = true; // loads stop asking until the person sets a key
    }
    resolve(saved); // the requests that were waiting retry (or give up) by themselves
  } else if (saved) {
    refreshAll(); // a key set by hand: load what it can see
  }
}

function saveKey(event) {
  event.preventDefault();
  const key = ui.keyInput.value.trim();
  if (!key) {
    ui.keyState.textContent = "Enter a key, or choose Cancel.";
    ui.keyInput.focus();
    return;
  }
  if (!/^[\x21-\x7e]+$/.test(key)) {
    ui.keyState.textContent = "That does not look like an API key: keys have no spaces or special characters.";
    ui.keyInput.focus();
    return;
  }
  storage.set(STORAGE_KEYS.apiKey, key);
  state.keyDeclined = false;
  updateKeyButton();
  announce("API key saved.");
  finishKeyDialog(true);
}

function forgetKey() {
  storage.remove(STORAGE_KEYS.apiKey);
  updateKeyButton();
  announce("API key forgotten.");
  if (keyResolve) {
    // The API is asking for a key right now: stay open for a new one.
    ui.keyState.textContent = "The saved key was forgotten. Enter another one, or choose Cancel.";
    ui.keyForget.disabled = true;
    ui.keyInput.focus();
    return;
  }
  finishKeyDialog(false);
  // What the page showed belonged to that key: take it off the screen, then load
  // again (which asks for a key if the API needs one).
  state.keyDeclined = false;
  leaveAnswer();
  setSession(null);
  state.titles.clear();
  ui.sessionList.replaceChildren();
  clearConversation();
  refreshAll();
}

// ---------------------------------------------------------------- models

async function loadModels() {
  try {
    const body = await apiJson("v1/models");
    const ids = (Array.isArray(body?.data) ? body.data : [])
      .map((model) => model?.id)
      .filter((id) => typeof id === "string" && id);
    const wanted = storage.get(STORAGE_KEYS.model);
    ui.model.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
    if (ids.length === 0) {
      ui.model.append(h("option", { value: "" }, "Default model"));
    } else if (wanted && ids.includes(wanted)) {
      ui.model.value = wanted;
    }
  } catch (error) {
    if (ui.model.options.length === 0) {
      ui.model.append(h("option", { value: "" }, "Default model"));
    }
    appendError("Could not load the list of models.", error);
  }
}

// ---------------------------------------------------------------- sidebar

function setSession(id) {
  state.sessionId = id || null;
  if (state.sessionId) {
    storage.set(STORAGE_KEYS.session, state.sessionId);
  } else {
    storage.remove(STORAGE_KEYS.session);
  }
  markCurrent();
}

function markCurrent() {
  for (const item of ui.sessionList.children) {
    const current = item.dataset.id === state.sessionId;
    item.classList.toggle("current", current);
    const button = item.querySelector(".session-open");
    if (current) {
      button.setAttribute("aria-current", "true");
    } else {
      button.removeAttribute("aria-current");
    }
  }
  const title = state.sessionId ? state.titles.get(state.sessionId) : "";
  document.title = title ? `${title} · Threadline` : "Threadline";
}

// The session's running token totals (GET /v1/sessions `usage`), or "" before its
// first model turn. Tokens are as the model's provider counts them (the echo model
// counts words).
function usageLine(usage) {
  const count = (value) => (Number.isInteger(value) && value >= 0 ? value : null);
  const turns = count(usage?.turns);
  const input = count(usage?.input_tokens);
  const output = count(usage?.output_tokens);
  if (!turns || input === null || output === null) {
    return "";
  }
  const number = new Intl.NumberFormat();
  return `${plural(turns, "turn")} · ${number.format(input)} tokens in · ${number.format(output)} out`;
}

function sessionItem(session) {
  const title = typeof session.title === "string" && session.title.trim() ? session.title : "Untitled conversation";
  state.titles.set(session.id, title);
  const count = Number.isInteger(session.message_count) ? plural(session.message_count, "message") : "";
  const when = relativeTime(session.updated_at);
  const open = h(
    "button",
    { type: "button", class: "session-open" },
    h("span", { class: "session-title" }, title),
    h("span", { class: "session-meta" }, [when, count].filter(Boolean).join(" · ")),
  );
  const usage = usageLine(session.usage);
  if (usage) {
    open.append(h("span", { class: "session-meta session-usage" }, usage));
  }
  open.title = title;
  open.addEventListener("click", () => openSession(session.id));
  const remove = h("button", { type: "button", class: "session-delete", "aria-label": `Delete “${title}”` }, "✕");
  remove.title = "Delete this conversation";
  remove.addEventListener("click", () => deleteSession(session.id, title));
  const item = h("li", { class: "session" }, open, remove);
  item.dataset.id = session.id;
  return item;
}

async function loadSessions({ more = false } = {}) {
  const load = ++state.sessionsLoad;
  const params = new URLSearchParams({ limit: String(SESSIONS_PAGE) });
  if (more && state.sessionsCursor) {
    params.set("after", state.sessionsCursor);
  }
  if (ui.sessionList.children.length === 0) {
    ui.sessionsStatus.textContent = "Loading conversations…";
  }
  ui.moreSessions.disabled = true;
  try {
    const page = await apiJson(`v1/sessions?${params}`);
    if (load !== state.sessionsLoad) {
      return;
    }
    const items = (Array.isArray(page?.data) ? page.data : []).filter((session) => typeof session?.id === "string");
    if (!more) {
      ui.sessionList.replaceChildren();
    }
    const shown = new Set([...ui.sessionList.children].map((item) => item.dataset.id));
    ui.sessionList.append(...items.filter((session) => !shown.has(session.id)).map(sessionItem));
    state.sessionsCursor = page?.has_more && page.next_cursor ? page.next_cursor : null;
    ui.moreSessions.hidden = !state.sessionsCursor;
    ui.sessionsStatus.textContent = ui.sessionList.children.length ? "" : "No conversations yet.";
    markCurrent();
  } catch (error) {
    if (load !== state.sessionsLoad) {
      return;
    }
    ui.sessionsStatus.textContent = `Could not load the conversations: ${error.message}`;
    if (error.status !== 401) {
      appendError("Could not load the list of conversations.", error);
    }
  } finally {
    ui.moreSessions.disabled = false;
  }
}

async function deleteSession(id, title) {
  if (!window.confirm(`Delete the conversation “${title}”? This cannot be undone.`)) {
    return;
  }
  try {
    await apiJson(`v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE", askAlways: true });
  } catch (error) {
    if (error.status !== 404) {
      appendError(`Could not delete “${title}”.`, error);
      return;
    }
  }
  for (const item of [...ui.sessionList.children]) {
    if (item.dataset.id === id) {
      item.remove();
    }
  }
  state.titles.delete(id);
  if (ui.sessionList.children.length === 0) {
    ui.sessionsStatus.textContent = "No conversations yet.";
  }
  announce(`Deleted “${title}”.`);
  if (id === state.sessionId) {
    newChat();
  } else {
    ui.prompt.focus();
  }
}

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.openSidebar.setAttribute("aria-expanded", "true");
  ui.newChat.focus();
}

function closeSidebar({ focus = true } = {}) {
  if (!ui.app.classList.contains("sidebar-open")) {
    return;
  }
  ui.app.classList.remove("sidebar-open");
  ui.openSidebar.setAttribute("aria-expanded", "false");
  if (focus) {
    ui.openSidebar.focus();
  }
}

// ---------------------------------------------------------------- conversation

function updateWelcome() {
  ui.welcome.hidden = ui.messages.children.length > 0;
}

function isNearBottom() {
  const { scrollHeight, scrollTop, clientHeight } = ui.conversation;
  return scrollHeight - scrollTop - clientHeight < 120;
}

function scrollToBottom() {
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function messageElement(role, label) {
  const body = h("div", { class: "body" });
  const article = h("article", { class: `message ${role}` }, h("span", { class: "role" }, label), body);
  ui.messages.append(article);
  updateWelcome();
  return { article, body };
}

function textOf(content) {
  if (typeof content === "string") {
    return content;
  }
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (part && typeof part === "object" && typeof part.text === "string") {
          return part.text;
        }
        return part && typeof part === "object" && typeof part.type === "string" ? `[${part.type}]` : "";
      })
      .filter(Boolean)
      .join("\n");
  }
  return "";
}

function addCopyButtons(body) {
  if (!navigator.clipboard) {
    return;
  }
  for (const pre of body.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const button = h("button", { type: "button", class: "copy-code" }, "Copy");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(code ? code.textContent : pre.textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      window.setTimeout(() => {
        button.textContent = "Copy";
      }, 1500);
    });
    pre.append(button);
  }
}

function renderAssistant(body, text) {
  body.replaceChildren(renderMarkdown(text));
  addCopyButtons(body);
}

function toolCallsBlock(toolCalls) {
  const lines = toolCalls.map((call) => {
    const name = call?.function?.name ?? "tool";
    const args = call?.function?.arguments ?? "";
    return `${name}(${args})`;
  });
  return h("details", {}, h("summary", {}, `Called ${plural(toolCalls.length, "tool")}`), h("pre", {}, lines.join("\n")));
}

function renderStoredMessage(message) {
  const role = typeof message?.role === "string" ? message.role : "assistant";
  const text = textOf(message?.content);
  if (role === "user") {
    messageElement("user", "You").body.append(text);
  } else if (role === "assistant") {
    const { body } = messageElement("assistant", "Assistant");
    renderAssistant(body, text);
    if (Array.isArray(message.tool_calls) && message.tool_calls.length) {
      body.append(toolCallsBlock(message.tool_calls));
    }
  } else if (role === "tool") {
    const { body } = messageElement("tool", "Tool result");
    body.append(h("details", {}, h("summary", {}, "Show the result"), h("pre", {}, text)));
  } else {
    messageElement("system", role === "developer" ? "Developer" : "System").body.append(text);
  }
}

/** The parts of an error box: what failed, the API's message, and its status and code. */
function errorContent(title, error) {
  const message = error instanceof Error ? error.message : String(error);
  const facts = [];
  if (error?.status) {
    facts.push(`HTTP ${error.status}`);
  }
  if (error?.code) {
    facts.push(error.code);
  }
  const parts = [h("strong", { class: "error-title" }, title), h("span", { class: "error-message" }, message)];
  if (facts.length) {
    parts.push(" ", h("span", { class: "error-code" }, `(${facts.join(", ")})`));
  }
  if (error?.code === "invalid_api_key" || error?.status === 401) {
    const button = h("button", { type: "button", class: "button subtle" }, "Enter an API key");
    button.addEventListener("click", () => openKeyDialog(message));
    parts.push(h("div", { class: "error-actions" }, button));
  }
  return parts;
}

function appendError(title, error) {
  const { article, body } = messageElement("error", "Error");
  article.setAttribute("role", "alert");
  body.append(...errorContent(title, error));
  scrollToBottom();
  return article;
}

function appendNotice(text) {
  const notice = h("p", { class: "notice", role: "status" }, text);
  ui.messages.append(notice);
  updateWelcome();
  return notice;
}

function clearConversation() {
  ui.messages.replaceChildren();
  updateWelcome();
}

/** The stored messages of session `id`, every page of them; null if the view changed meanwhile. */
async function loadMessages(id, view) {
  const messages = [];
  let after = null;
  for (let page = 0; page < MAX_MESSAGE_PAGES; page += 1) {
    const params = new URLSearchParams({ limit: String(MESSAGES_PAGE) });
    if (after) {
      params.set("after", after);
    }
    const body = await apiJson(`v1/sessions/${encodeURIComponent(id)}/messages?${params}`);
    if (view !== state.view) {
      return null;
    }
    messages.push(...(Array.isArray(body?.data) ? body.data : []));
    after = body?.has_more && body.next_cursor ? body.next_cursor : null;
    if (!after) {
      break;
    }
  }
  return messages;
}

function showMessages(messages) {
  for (const message of messages) {
    renderStoredMessage(message);
  }
  if (messages.length >= MAX_MESSAGE_PAGES * MESSAGES_PAGE) {
    appendNotice(`Only the first ${messages.length.toLocaleString()} messages of this conversation are shown.`);
  }
  scrollToBottom();
}

async function showSession(id) {
  const view = ++state.view;
  clearConversation();
  if (!id) {
    return;
  }
  const loading = appendNotice("Loading the conversation…");
  let messages;
  try {
    messages = await loadMessages(id, view);
  } catch (error) {
    if (view !== state.view) {
      return;
    }
    loading.remove();
    if (error.status === 404) {
      // Deleted, expired, or another key's: there is nothing to continue.
      setSession(null);
      appendNotice("That conversation is no longer available. This is a new chat.");
    } else {
      appendError("Could not load this conversation.", error);
    }
    return;
  }
  if (messages === null) {
    return;
  }
  loading.remove();
  showMessages(messages);
}

function setStreaming(active) {
  ui.stop.hidden = !active;
  ui.send.hidden = active;
  ui.app.classList.toggle("is-streaming", active);
}

function openSession(id) {
  leaveAnswer();
  setSession(id);
  closeSidebar({ focus: false });
  showSession(id).then(() => ui.prompt.focus());
}

function newChat() {
  leaveAnswer();
  setSession(null);
  showSession(null);
  closeSidebar({ focus: false });
  ui.prompt.focus();
  announce("New chat.");
}

// ---------------------------------------------------------------- answers
//
// Every answer is asked for as resumable (X-Threadline-Resumable: true): the server
// records it in its session, runs it to the end even when this page goes away, and
// GET /v1/sessions/{id}/stream?after=N sends it again from chunk number N (chunks are
// numbered from 0 in the order sent; `data: [DONE]` is not counted).
//
// While an answer streams, this tab's sessionStorage holds a record of it (below). A
// reloaded page finds the record, shows the pending turn, and follows the answer on;
// a connection that drops mid-answer is picked up again the same way, without a reload.

// The record keeps the text shown so far together with the number of chunks that text
// was made of, written in one setItem: any record, however old, is a consistent pair,
// so resuming after `applied` continues the text exactly where it stops (no duplicate,
// no gap). Resuming after 0 into an empty bubble would be as exact, but replays and
// re-renders the whole answer, and shows nothing until it has.
const ANSWER_RECORD = "threadline.answer";
const ANSWER_SAVE_MS = 200; // the record trails the screen by at most this (it stays consistent)
const RESUME_DELAYS_MS = [500, 1000, 2000, 4000, 8000]; // reconnecting after a dropped connection
const STOP_WAIT_MS = 10_000; // Stop before the answer's session is known: wait this long for it

const answerRecord = {
  read() {
    let record = null;
    try {
      record = JSON.parse(tabStorage.get(ANSWER_RECORD) ?? "null");
    } catch {
      record = null;
    }
    const text = (value) => typeof value === "string";
    const count = (value) => Number.isInteger(value) && value >= 0;
    if (
      record &&
      typeof record === "object" &&
      text(record.sessionId) &&
      record.sessionId &&
      text(record.streamId) &&
      record.streamId &&
      count(record.applied) &&
      text(record.text) &&
      text(record.user) &&
      count(record.created)
    ) {
      return record;
    }
    tabStorage.remove(ANSWER_RECORD);
    return null;
  },
  save(answer) {
    window.clearTimeout(answer.saveTimer);
    answer.saveTimer = 0;
    if (answer.closed || !answer.sessionId || !answer.streamId) {
      return;
    }
    tabStorage.set(
      ANSWER_RECORD,
      JSON.stringify({
        sessionId: answer.sessionId,
        streamId: answer.streamId,
        created: answer.created,
        applied: answer.applied,
        text: answer.text,
        user: answer.user,
        finishReason: answer.finishReason,
        toolCalls: answer.toolCalls,
      }),
    );
  },
  saveSoon(answer) {
    answer.saveTimer ||= window.setTimeout(() => answerRecord.save(answer), ANSWER_SAVE_MS);
  },
  /** The answer is over (or left): its record goes, and no late save brings it back. */
  close(answer) {
    answer.closed = true;
    window.clearTimeout(answer.saveTimer);
    const record = answerRecord.read();
    if (!record || record.streamId === answer.streamId || !answer.streamId) {
      tabStorage.remove(ANSWER_RECORD);
    }
  },
};

/**
 * Whether the stored conversation already holds the recorded answer's turn: an answer
 * to the recorded message, stored at or after the second the answer began (a turn is
 * stored when its answer ends; `created` and `created_at` are both the server's clock).
 * Stored messages carry no completion id, so this is how the turn is recognised.
 */
function isStoredTurn(messages, record) {
  let asked = null;
  for (const message of messages) {
    if (message?.role === "user") {
      asked = textOf(message.content);
    } else if (message?.role === "assistant" && asked === record.user) {
      if (Number(message.created_at) >= record.created) {
        return true;
      }
    }
  }
  return false;
}

function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const done = () => {
      window.clearTimeout(timer);
      window.removeEventListener("online", done);
      signal.removeEventListener("abort", aborted);
      resolve();
    };
    const aborted = () => {
      done();
      reject(new DOMException("Aborted", "AbortError"));
    };
    const timer = window.setTimeout(done, ms);
    window.addEventListener("online", done); // back online: try now
    signal.addEventListener("abort", aborted);
  });
}

/** A failure that a resume may get past: the connection, or the server for a moment. */
function isDrop(error) {
  if (error instanceof TypeError) {
    return true; // fetch's body stream broke
  }
  return error instanceof ApiError && !error.streamed && (error.code === "network_error" || error.status >= 500);
}

class StreamCut extends Error {}

function newAnswer({ view, user, reply, record = null }) {
  return {
    view,
    user,
    reply,
    sessionId: record?.sessionId ?? null,
    streamId: record?.streamId ?? null,
    created: record?.created ?? 0,
    applied: record?.applied ?? 0, // chunks received and applied to `text`
    text: record?.text ?? "",
    finishReason: record?.finishReason ?? null,
    toolCalls: record?.toolCalls === true,
    saveTimer: 0,
    closed: false,
  };
}

function replyElements(user, text = "") {
  messageElement("user", "You").body.append(user);
  const reply = messageElement("assistant", "Assistant");
  reply.article.classList.add("streaming");
  reply.article.setAttribute("aria-busy", "true");
  if (text) {
    renderAssistant(reply.body, text);
  }
  scrollToBottom();
  return reply;
}

function resumeRequest(answer, signal) {
  return apiFetch(`v1/sessions/${encodeURIComponent(answer.sessionId)}/stream?after=${answer.applied}`, {
    headers: { Accept: "text/event-stream" },
    signal,
  });
}

/**
 * Stop the answer for good: the server is told first (POST .../stream/cancel, which
 * ends the model call and stores nothing), then the page stops reading. Returns the
 * answer's final status as the server gives it, or null when it could not be told.
 */
function stopAnswer() {
  const run = state.streaming;
  if (!run || run.stop) {
    return;
  }
  run.stop = (async () => {
    let status = null;
    try {
      if (!run.answer.sessionId) {
        // The request is on its way: its session (a new chat's comes back with the
        // answer's first bytes) is needed to cancel it.
        await Promise.race([run.sessionKnown.promise, pause(STOP_WAIT_MS, run.controller.signal)]);
      }
      if (run.answer.sessionId) {
        const body = await apiJson(`v1/sessions/${encodeURIComponent(run.answer.sessionId)}/stream/cancel`, {
          method: "POST",
        });
        status = typeof body?.status === "string" ? body.status : null;
      }
    } catch {
      status = null;
    }
    if (status !== "completed") {
      run.controller.abort(); // a completed answer is stored: let its end arrive instead
    }
    return status;
  })();
}

/** The page leaves the answer (another conversation, a new chat): it runs on, and is
 * stored when it ends, but this tab no longer follows it. */
function leaveAnswer() {
  const run = state.streaming;
  if (run) {
    run.left = true;
    answerRecord.close(run.answer);
    run.controller.abort();
  }
}

/**
 * Stream an answer into its bubble: `first` opens it (the chat request, or a resume),
 * and a dropped connection is resumed from the chunks applied so far.
 */
async function runAnswer(answer, first) {
  const { reply, view } = answer;
  const controller = new AbortController();
  let knowSession;
  const sessionKnown = new Promise((resolve) => {
    knowSession = resolve;
  });
  const run = { answer, controller, sessionKnown: { promise: sessionKnown }, stop: null, left: false };
  if (answer.sessionId) {
    knowSession();
  }
  state.streaming = run;
  setStreaming(true);

  let outcome = "cut"; // done | stopped | error | gone | cut (the stream ended without [DONE])
  let failure = null;
  let frame = 0; // a render waiting for the next animation frame
  const render = () => {
    frame = 0;
    const follow = isNearBottom();
    renderAssistant(reply.body, answer.text);
    if (follow) {
      scrollToBottom();
    }
  };
  const reconnecting = h("p", { class: "notice reconnecting", role: "status" }, "Connection lost: reconnecting…");

  let open = first;
  let retries = 0;
  for (;;) {
    try {
      const response = await open(controller.signal);
      const resumed = open !== first || first.resumes;
      if (resumed && response.status === 404) {
        outcome = "gone"; // the session has no resumable answer (any more)
        break;
      }
      if (!response.ok) {
        throw await errorFrom(response);
      }
      if (!answer.sessionId) {
        answer.sessionId = response.headers.get(SESSION_HEADER);
        knowSession();
      }
      if (resumed && response.headers.get(STREAM_ID_HEADER) !== answer.streamId) {
        outcome = "gone"; // a later answer took its place: this one is over
        break;
      }
      reconnecting.remove();
      for await (const data of serverSentData(response.body)) {
        if (data === "[DONE]") {
          outcome = "done";
          break;
        }
        answer.applied += 1; // every chunk counts, read or not, as the server numbers them
        retries = 0;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          answerRecord.saveSoon(answer);
          continue;
        }
        if (!answer.streamId && typeof chunk?.id === "string" && chunk.id) {
          answer.streamId = chunk.id;
          answer.created = Number.isInteger(chunk.created) ? chunk.created : 0;
        }
        if (chunk?.error) {
          throw Object.assign(new ApiError({ ...chunk.error, status: 0 }), { streamed: true });
        }
        const choice = Array.isArray(chunk?.choices) ? chunk.choices[0] : null;
        const delta = choice?.delta;
        if (typeof delta?.content === "string" && delta.content) {
          answer.text += delta.content;
          frame ||= window.requestAnimationFrame(render);
        }
        if (Array.isArray(delta?.tool_calls) && delta.tool_calls.length) {
          answer.toolCalls = true;
        }
        if (choice?.finish_reason) {
          answer.finishReason = choice.finish_reason;
        }
        answerRecord.saveSoon(answer);
      }
      if (outcome !== "done") {
        throw new StreamCut();
      }
      break;
    } catch (error) {
      const dropped = error instanceof StreamCut || isDrop(error) || (isAbort(error) && !controller.signal.aborted);
      if (state.leaving) {
        outcome = "left"; // the page is going away: the record stays for the next one
        break;
      }
      if (isAbort(error) && controller.signal.aborted) {
        outcome = "stopped";
        break;
      }
      // Stop, if asked meanwhile, aborts the wait or the resume when the server has
      // cancelled the answer; an answer that completed first is resumed to its end.
      if (dropped && answer.sessionId && answer.streamId && retries < RESUME_DELAYS_MS.length) {
        answerRecord.save(answer);
        reply.article.append(reconnecting);
        try {
          await pause(RESUME_DELAYS_MS[retries], controller.signal);
        } catch {
          outcome = "stopped";
          break;
        }
        retries += 1;
        open = (signal) => resumeRequest(answer, signal);
        continue;
      }
      if (!dropped) {
        outcome = "error";
        failure = error;
      }
      break;
    }
  }
  reconnecting.remove();
  if (outcome === "done" && run.stop) {
    // Stop was asked for and the end came: stopped, unless the answer was already stored.
    outcome = (await run.stop) === "completed" ? "done" : "stopped";
  }
  const stopStatus = outcome === "stopped" && run.stop ? await run.stop : null;
  if (state.streaming === run) {
    state.streaming = null;
    setStreaming(false);
  }
  if (outcome === "left") {
    answerRecord.save(answer);
    return;
  }
  // Kept only when the connection was lost for good: a reload resumes the answer.
  if (outcome !== "cut" || !answer.streamId) {
    answerRecord.close(answer);
  } else {
    answerRecord.save(answer);
  }
  if (run.left || view !== state.view) {
    return;
  }
  finishAnswer(answer, { outcome, failure, stopStatus, frame, render });
}

function finishAnswer(answer, { outcome, failure, stopStatus, frame, render }) {
  const { reply, view } = answer;
  if (outcome === "gone") {
    // Over, and not this page's to show: the stored conversation says how it ended.
    setSession(answer.sessionId);
    showSession(answer.sessionId);
    return;
  }
  // The session the answer belongs to (a new chat's comes from the server). A turn
  // that failed or was stopped stored nothing, so its id would name nothing.
  if (answer.sessionId && (outcome === "done" || outcome === "cut")) {
    setSession(answer.sessionId);
  }
  window.cancelAnimationFrame(frame); // the last render is now, so nothing added below is wiped
  render();
  reply.article.classList.remove("streaming");
  reply.article.removeAttribute("aria-busy");
  if (outcome === "error" && !answer.text) {
    // Nothing came back: the reply's place shows the error instead.
    reply.article.classList.replace("assistant", "error");
    reply.article.setAttribute("role", "alert");
    reply.article.querySelector(".role").textContent = "Error";
    reply.body.replaceChildren(...errorContent("The message was not answered.", failure));
    reply.body.append(h("p", { class: "notice" }, "It was not saved to the conversation."));
    if (!ui.prompt.value && view === state.view) {
      ui.prompt.value = answer.user; // so that trying again is one key away
      autosize();
    }
  } else if (outcome === "error") {
    const box = h("div", { class: "error-box", role: "alert" }, ...errorContent("The answer failed part way.", failure));
    box.append(h("p", { class: "notice" }, "This turn was not saved to the conversation."));
    reply.body.append(box);
  } else if (outcome === "stopped") {
    const told = stopStatus === "cancelled" || stopStatus === "failed";
    reply.body.append(
      h(
        "p",
        { class: "notice" },
        told
          ? "Stopped. This turn was not saved to the conversation."
          : "Stopped here. The server could not be told, so it may still finish and save this answer.",
      ),
    );
  } else if (outcome === "cut") {
    reply.body.append(
      h(
        "div",
        { class: "error-box", role: "alert" },
        h("strong", { class: "error-title" }, "The answer was cut off."),
        answer.streamId
          ? "The connection closed before the answer was complete. The server finishes it: reload the page to see the rest."
          : "The connection closed before the answer was complete.",
      ),
    );
  } else if (answer.finishReason === "length") {
    reply.body.append(h("p", { class: "notice" }, "The answer reached the model's length limit."));
  } else if (answer.toolCalls && !answer.text) {
    reply.body.append(h("p", { class: "notice" }, "The model asked to call a tool; this page does not run tools."));
  }
  if (isNearBottom()) {
    scrollToBottom();
  }
  announce(outcome === "done" ? "Answer complete." : outcome === "stopped" ? "Stopped." : "The answer failed.");
  if (outcome === "done") {
    loadSessions();
  }
}

async function send(text) {
  const reply = replyElements(text);
  const answer = newAnswer({ view: state.view, user: text, reply });
  const headers = {
    "Content-Type": "application/json",
    Accept: "text/event-stream",
    [RESUMABLE_HEADER]: "true",
  };
  if (state.sessionId) {
    headers[SESSION_HEADER] = state.sessionId;
  }
  const payload = { messages: [{ role: "user", content: text }], stream: true };
  if (ui.model.value) {
    payload.model = ui.model.value;
  }
  await runAnswer(answer, (signal) =>
    apiFetch("v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify(payload),
      signal,
      askAlways: true,
    }),
  );
}

/**
 * After a reload, with an answer recorded in this tab: the conversation as stored,
 * then the pending turn with the text shown so far, followed on from where it was.
 */
async function resumeRecorded(record) {
  const view = ++state.view;
  clearConversation();
  const loading = appendNotice("Loading the conversation…");
  let messages;
  try {
    messages = await loadMessages(record.sessionId, view);
  } catch (error) {
    if (error.status !== 404) {
      if (view === state.view) {
        loading.remove();
        appendError("Could not load this conversation.", error);
      }
      return;
    }
    messages = []; // a new chat's session is created when its first turn is stored
  }
  if (messages === null) {
    return;
  }
  loading.remove();
  showMessages(messages);
  if (isStoredTurn(messages, record)) {
    tabStorage.remove(ANSWER_RECORD); // it ended while the page was away: shown above
    setSession(record.sessionId);
    return;
  }
  const reply = replyElements(record.user, record.text);
  const answer = newAnswer({ view, user: record.user, reply, record });
  const resume = (signal) => resumeRequest(answer, signal);
  resume.resumes = true;
  runAnswer(answer, resume); // streams on; the page is ready meanwhile
}

// ---------------------------------------------------------------- composer

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${ui.prompt.scrollHeight + 2}px`;
}

function submit(event) {
  event.preventDefault();
  const text = ui.prompt.value;
  if (state.streaming || !text.trim()) {
    return;
  }
  ui.prompt.value = "";
  autosize();
  send(text);
}

function onPromptKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  } else if (event.key === "Escape" && state.streaming) {
    event.preventDefault();
    stopAnswer();
  }
}

// ---------------------------------------------------------------- start

function refreshAll() {
  return Promise.all([loadModels(), loadSessions(), showSession(state.sessionId)]);
}

function wire() {
  ui.composer.addEventListener("submit", submit);
  ui.prompt.addEventListener("keydown", onPromptKey);
  ui.prompt.addEventListener("input", autosize);
  ui.stop.addEventListener("click", () => {
    stopAnswer();
    ui.prompt.focus();
  });
  ui.newChat.addEventListener("click", newChat);
  ui.moreSessions.addEventListener("click", () => loadSessions({ more: true }));
  ui.model.addEventListener("change", () => storage.set(STORAGE_KEYS.model, ui.model.value));
  ui.keyButton.addEventListener("click", () => openKeyDialog(""));
  ui.keyForm.addEventListener("submit", saveKey);
  ui.keyCancel.addEventListener("click", () => finishKeyDialog(false));
  ui.keyForget.addEventListener("click", forgetKey);
  ui.keyDialog.addEventListener("cancel", (event) => {
    event.preventDefault(); // Escape: the same as Cancel
    finishKeyDialog(false);
  });
  ui.openSidebar.addEventListener("click", openSidebar);
  ui.closeSidebar.addEventListener("click", () => closeSidebar());
  ui.scrim.addEventListener("click", () => closeSidebar());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.app.classList.contains("sidebar-open") && !ui.keyDialog.open) {
      closeSidebar();
    }
  });
  // Leaving or reloading: the answer streaming in is saved as it stands, and the
  // connection the browser cuts is not taken for a stop or a drop.
  window.addEventListener("pagehide", () => {
    state.leaving = true;
    if (state.streaming) {
      answerRecord.save(state.streaming.answer);
    }
  });
  window.addEventListener("pageshow", () => {
    state.leaving = false;
  });
  window.addEventListener("storage", (event) => {
    if (event.key === STORAGE_KEYS.apiKey) {
      updateKeyButton();
    }
  });
}

async function start() {
  wire();
  updateKeyButton();
  updateWelcome();
  ui.prompt.focus();
  await loadModels(); // first, alone: it is what asks for a key when the API needs one
  const recorded = answerRecord.read(); // an answer this tab was streaming when it reloaded
  const conversation = recorded ? resumeRecorded(recorded) : showSession(state.sessionId);
  await Promise.all([loadSessions(), conversation]); // a resumed answer is streaming by then
  document.documentElement.dataset.ready = "true";
}

start();
