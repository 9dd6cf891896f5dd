// flask_chat's page: plain JavaScript, no build step.
//
// The chat id is in the address (?chat=<id>), so a second tab opens the same chat; the chats this
// browser has opened are listed in the sidebar (localStorage). Sending a message POSTs it and reads
// the answer from the response body (Server-Sent Events over fetch). If a body ends without a final
// event, the page continues with GET .../stream?from=<last event id>, as often as it must. Every
// piece of an answer is also kept in sessionStorage with its cursor, so a reloaded page shows what
// it had and resumes strictly after that cursor ("resumed from #N after reload"); a tab without it
// (a second tab) follows the answer from its start. A long-poll of the history tells every tab at
// once that a new answer started.
//
// Each answer element carries data-state: writing, completed, stopped, failed or abandoned; its
// panel shows the resume cursor, where it resumed from, and which process served it.
"use strict";

const CHAT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const ENDINGS = { end: "completed", error: "failed", stopped: "stopped", abandoned: "abandoned" };
const LABELS = {
  writing: "writing\u2026",
  completed: "completed",
  stopped: "stopped",
  failed: "failed",
  abandoned: "abandoned",
};
const ABANDONED = "the process writing this answer stopped before it finished";
const CHATS_KEY = "flask_chat.chats";

const chatId = currentChatId();
const api = `/api/chat/${chatId}`;
const turns = new Map(); // message number -> turn
let nextSeq = 0; // the first message number the history poll asks for
let sending = null; // while a POST waits for its headers: a promise settled when they come

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function currentChatId() {
  const id = new URLSearchParams(location.search).get("chat");
  if (id && CHAT_ID_PATTERN.test(id)) return id;
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const fresh = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  history.replaceState(null, "", `?chat=${fresh}`);
  return fresh;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function notice(text) {
  $("notice").textContent = text;
}

// -- the list of chats ----------------------------------------------------

function savedChats() {
  try {
    const chats = JSON.parse(localStorage.getItem(CHATS_KEY) || "[]");
    return Array.isArray(chats) ? chats.filter((c) => c && CHAT_ID_PATTERN.test(c.id)) : [];
  } catch {
    return [];
  }
}

// Put this chat first in the list, with `title` if it has none yet; show the list.
function rememberChat(title) {
  const chats = savedChats();
  const known = chats.find((c) => c.id === chatId);
  const entry = { id: chatId, title: known?.title || title || "" };
  const list = [entry, ...chats.filter((c) => c.id !== chatId)].slice(0, 50);
  localStorage.setItem(CHATS_KEY, JSON.stringify(list));
  $("chats").replaceChildren(
    ...list.map((chat) => {
      const link = document.createElement("a");
      link.href = `/?chat=${chat.id}`;
      link.textContent = chat.title || "New chat";
      if (chat.id === chatId) link.setAttribute("aria-current", "page");
      const item = document.createElement("li");
      item.append(link);
      return item;
    }),
  );
  $("title").textContent = entry.title || "New chat";
  document.title = `${entry.title || "New chat"} · flask_chat`;
}

const titleOf = (message) => (message.length > 48 ? `${message.slice(0, 47)}\u2026` : message);

// -- turns: a user message and its answer ---------------------------------

function newTurn(message) {
  const el = $("turn-template").content.firstElementChild.cloneNode(true);
  el.querySelector(".bubble").textContent = message;
  $("messages").append(el);
  const answer = el.querySelector(".answer");
  const turn = {
    el,
    answer,
    body: answer.querySelector(".answer-body"),
    seq: null,
    text: "", // the answer's Markdown so far
    lastId: null, // the cursor of the last event received
    servedBy: [], // the processes whose responses brought it, in order
    state: null,
    rendering: false,
  };
  setState(turn, "writing");
  return turn;
}

function register(turn, seq) {
  turn.seq = seq;
  turn.el.dataset.seq = String(seq);
  turn.answer.dataset.seq = String(seq);
  turns.set(seq, turn);
}

function setState(turn, state, error) {
  turn.state = state;
  turn.answer.dataset.state = state;
  turn.answer.querySelector(".badge").textContent = LABELS[state];
  turn.answer.querySelector(".answer-error").textContent = error || "";
  render(turn);
  updateButtons();
}

// Render the Markdown at most once a frame, however fast the pieces come.
function render(turn) {
  if (turn.rendering) return;
  turn.rendering = true;
  requestAnimationFrame(() => {
    turn.rendering = false;
    turn.body.replaceChildren(renderMarkdown(turn.text));
    turn.answer.querySelector(".cursor").textContent = turn.lastId === null ? "" : `cursor #${turn.lastId}`;
    turn.answer.dataset.cursor = turn.lastId ?? "";
  });
}

function served(turn, response) {
  const pid = response.headers.get("X-Worker-Pid");
  if (!pid || turn.servedBy.at(-1) === pid) return;
  turn.servedBy.push(pid);
  const gunicorn = (response.headers.get("X-Server-Software") || "").startsWith("gunicorn");
  const who = turn.servedBy.join(" \u2192 ");
  turn.answer.querySelector(".served").textContent = gunicorn ? `gunicorn worker ${who}` : `served by pid ${who}`;
}

function writingTurn() {
  return [...turns.values()].find((turn) => turn.state === "writing");
}

function updateButtons() {
  const writing = writingTurn();
  $("send").disabled = sending !== null || writing !== undefined;
  $("stop").disabled = writing === undefined;
}

// -- progress kept across a reload of this tab ----------------------------

const progressKey = (turn) => `flask_chat.progress.${chatId}.${turn.seq}`;

function saveProgress(turn) {
  if (turn.seq === null) return;
  try {
    sessionStorage.setItem(progressKey(turn), JSON.stringify({ text: turn.text, cursor: turn.lastId }));
  } catch {
    // storage full or disabled: a reload then follows the answer from its start
  }
}

function savedProgress(turn) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(progressKey(turn)) || "null");
    return saved && typeof saved.text === "string" && /^\d+$/.test(saved.cursor ?? "") ? saved : null;
  } catch {
    return null;
  }
}

// -- reading answers ------------------------------------------------------

function onEvent(turn, event) {
  if (turn.state !== "writing") return;
  if (event.id) turn.lastId = event.id;
  if (event.type === "message") {
    turn.text += event.data;
    saveProgress(turn);
    render(turn);
    turn.el.scrollIntoView({ block: "end" });
  } else if (event.type in ENDINGS) {
    finish(turn, ENDINGS[event.type], event.data);
  }
}

function finish(turn, state, detail) {
  if (turn.seq !== null) sessionStorage.removeItem(progressKey(turn));
  if (state === "failed") setState(turn, state, detail || "the answer failed");
  else if (state === "abandoned") setState(turn, state, ABANDONED);
  else setState(turn, state);
}

// Read a text/event-stream body, calling onEvent({type, id, data}) for each event.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { type: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue; // a comment: keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
        else if (field === "event") event.type = value;
      }
      if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
    }
  }
}

async function consume(turn, response) {
  served(turn, response);
  try {
    await readEvents(response.body, (event) => onEvent(turn, event));
  } catch {
    // the connection dropped: the caller continues from the last event id
  }
}

// Follow an answer after `cursor` ("0": from its start) until it ends, reconnecting after drops.
async function follow(turn, cursor) {
  for (let attempt = 0; turn.state === "writing"; attempt++) {
    if (attempt) await sleep(Math.min(1000 * attempt, 5000));
    let response;
    try {
      response = await fetch(`${api}/stream?answer=${turn.seq}&from=${turn.lastId ?? cursor}`, { cache: "no-store" });
    } catch (err) {
      notice(`cannot reach the server (${err.message}); retrying`);
      continue;
    }
    if (response.status === 204 || response.status === 404) return refresh(turn); // nothing after our cursor
    if (!response.ok) {
      notice(`the server answered ${response.status}; retrying`);
      continue;
    }
    notice("");
    await consume(turn, response);
  }
}

// Ask the history how an answer stands, and show it.
async function refresh(turn) {
  for (;;) {
    try {
      const data = await getJSON(api);
      const message = data.messages.find((m) => m.seq === turn.seq);
      if (!message) finish(turn, "failed", "this answer is gone (was the server restarted?)");
      else show(turn, message.answer);
      return;
    } catch (err) {
      notice(`cannot reach the server (${err.message}); retrying`);
      await sleep(1000);
    }
  }
}

// Show an answer as the history tells it: its text once done; else follow it, after what this tab had.
function show(turn, answer) {
  if (answer.done) {
    turn.text = answer.text;
    turn.lastId = String(answer.cursor);
    finish(turn, answer.state, answer.error);
    return;
  }
  const saved = savedProgress(turn);
  if (saved && turn.lastId === null) {
    turn.text = saved.text;
    turn.lastId = saved.cursor;
    turn.answer.querySelector(".resumed").textContent = `resumed from #${saved.cursor} after reload`;
  }
  setState(turn, "writing");
  follow(turn, "0");
}

function addFromServer(message) {
  if (turns.has(message.seq)) return;
  const turn = newTurn(message.message);
  register(turn, message.seq);
  if (message.seq === 0) rememberChat(titleOf(message.message));
  show(turn, message.answer);
}

// -- sending and stopping -------------------------------------------------

async function send(message) {
  notice("");
  const turn = newTurn(message);
  let headersCame;
  sending = new Promise((resolve) => (headersCame = resolve));
  updateButtons();
  let response;
  try {
    response = await fetch(api, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message }),
    });
    if (response.ok) register(turn, Number(response.headers.get("X-Answer-Seq")));
  } catch (err) {
    response = null;
    notice(`could not send: ${err.message}`);
  } finally {
    sending = null;
    headersCame();
    updateButtons();
  }
  if (response === null || !response.ok) {
    turn.el.remove();
    if (response) notice((await response.json().catch(() => ({}))).error || `HTTP ${response.status}`);
    return;
  }
  $("message").value = "";
  if (turn.seq === 0) rememberChat(titleOf(message));
  if (response.status === 204) return refresh(turn); // stopped before it started
  await consume(turn, response);
  if (turn.state === "writing") follow(turn, "0");
}

async function stop() {
  const turn = writingTurn();
  if (!turn) return;
  $("stop").disabled = true;
  try {
    const response = await fetch(`${api}/stop`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ answer: turn.seq }),
    });
    if (!response.ok) notice(`could not stop: HTTP ${response.status}`);
  } catch (err) {
    notice(`could not stop: ${err.message}`);
  }
  // The answer's own stream brings the stopped state, to this tab and every other one.
}

// -- start ----------------------------------------------------------------

// Long-poll the history for messages sent from other tabs (or before this page loaded).
async function poll() {
  for (;;) {
    try {
      const data = await getJSON(`${api}?since=${nextSeq}`);
      if (sending) await sending; // our own POST registers its turn first
      data.messages.forEach(addFromServer);
      nextSeq = Math.max(nextSeq, data.next);
    } catch (err) {
      await sleep(1000);
    }
  }
}

async function showInfo() {
  try {
    const info = await getJSON("/api/info");
    const lines = [`log: ${info.log}`, `model: ${info.model}`];
    $("info").replaceChildren(...lines.map((line) => Object.assign(document.createElement("div"), { textContent: line })));
  } catch {
    // the info line is a nicety
  }
}

async function start() {
  $("chat-id").textContent = chatId;
  rememberChat("");
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = $("message").value;
    if (message.trim() && !$("send").disabled) send(message);
  });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  showInfo();
  for (;;) {
    try {
      const data = await getJSON(api);
      data.messages.forEach(addFromServer);
      nextSeq = data.next;
      break;
    } catch (err) {
      notice(`cannot load the chat (${err.message}); retrying`);
      await sleep(1000);
    }
  }
  notice("");
  document.body.dataset.ready = "true";
  poll();
}

start();
