// flask_chat's page: plain JavaScript, no build step.
//
// The chat id is in the address (?chat=<id>), so a second tab opens the same chat.
// Sending a message POSTs it and reads the answer from the response body (SSE via
// fetch); if that body ends without a final event, the answer continues through
// an EventSource from the last event id. On load, the page shows the history and
// follows an answer still being written from its first chunk, so a reload shows
// nothing twice and nothing missing. A long-poll of the history tells every tab
// at once that a new answer started.
//
// Each answer element carries data-state: streaming, completed, stopped or failed.
"use strict";

const CHAT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const ENDINGS = { end: "completed", error: "failed", stopped: "stopped", abandoned: "abandoned" };
const LABELS = { streaming: "writing\u2026", completed: "completed", stopped: "stopped", failed: "failed" };

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

// -- turns: a user message and its answer ---------------------------------

function newTurn(message) {
  const el = $("turn-template").content.firstElementChild.cloneNode(true);
  el.querySelector(".user").textContent = message;
  $("messages").append(el);
  const turn = {
    el,
    answer: el.querySelector(".answer"),
    text: el.querySelector(".answer-text"),
    status: el.querySelector(".answer-status"),
    seq: null,
    lastId: null, // the cursor of the last event received
    source: null, // the EventSource following the answer, if any
    state: null,
  };
  setState(turn, "streaming");
  return turn;
}

function register(turn, seq) {
  turn.seq = seq;
  turn.el.dataset.seq = String(seq);
  turn.answer.dataset.seq = String(seq);
  turns.set(seq, turn);
}

function setState(turn, state, detail) {
  turn.state = state;
  turn.answer.dataset.state = state;
  turn.status.textContent = detail ? `${LABELS[state]}: ${detail}` : LABELS[state];
  updateButtons();
}

function streamingTurn() {
  return [...turns.values()].find((turn) => turn.state === "streaming");
}

function updateButtons() {
  const streaming = streamingTurn();
  $("send").disabled = sending !== null || streaming !== undefined;
  $("stop").disabled = streaming === undefined;
}

function onEvent(turn, event) {
  if (turn.state !== "streaming") return;
  if (event.id) turn.lastId = event.id;
  if (event.type === "message") {
    turn.text.append(event.data);
    turn.el.scrollIntoView({ block: "end" });
  } else if (event.type in ENDINGS) {
    finish(turn, ENDINGS[event.type], event.data);
  }
}

function finish(turn, ending, detail) {
  if (turn.source) {
    turn.source.close();
    turn.source = null;
  }
  if (ending === "abandoned") setState(turn, "failed", "the server stopped writing this answer");
  else setState(turn, ending, ending === "failed" ? detail || "unknown error" : "");
}

// Show an answer as the history tells it: its text once done, else follow it from its start.
function show(turn, answer) {
  if (turn.source) {
    turn.source.close();
    turn.source = null;
  }
  turn.text.textContent = answer.done ? answer.text : "";
  turn.lastId = null;
  setState(turn, "streaming");
  if (answer.done) finish(turn, answer.state, answer.error);
  else follow(turn);
}

// Follow an answer with an EventSource, after the last event received (from its start if none).
// The browser reconnects by itself after a drop, sending Last-Event-ID.
function follow(turn) {
  const source = new EventSource(`${api}/stream?answer=${turn.seq}&from=${turn.lastId ?? "0"}`);
  turn.source = source;
  const forward = (type) => (e) => onEvent(turn, { type, id: e.lastEventId, data: e.data });
  source.onmessage = forward("message");
  source.addEventListener("end", forward("end"));
  source.addEventListener("stopped", forward("stopped"));
  source.addEventListener("abandoned", forward("abandoned"));
  source.addEventListener("error", (e) => {
    if (e instanceof MessageEvent) {
      forward("error")(e); // the answer failed (a final `event: error`)
    } else if (source.readyState === EventSource.CLOSED && turn.source === source) {
      turn.source = null; // 204 or a failed request: ask the history how the answer stands
      refresh(turn);
    }
  });
}

async function refresh(turn) {
  for (;;) {
    try {
      const data = await getJSON(api);
      const message = data.messages.find((m) => m.seq === turn.seq);
      if (!message) {
        finish(turn, "failed", "this answer is gone (was the server restarted?)");
      } else {
        if (!message.answer.done) await sleep(1000); // the stream request failed: do not hammer the server
        show(turn, message.answer);
      }
      return;
    } catch (err) {
      notice(`cannot reach the server (${err.message}); retrying`);
      await sleep(1000);
    }
  }
}

function addFromServer(message) {
  if (turns.has(message.seq)) return;
  const turn = newTurn(message.message);
  register(turn, message.seq);
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
  if (response.status === 204) return refresh(turn); // stopped before it started
  try {
    await readEvents(response.body, (event) => onEvent(turn, event));
  } catch {
    // the connection dropped: continue below from the last event id
  }
  if (turn.state === "streaming" && !turn.source) follow(turn);
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

async function stop() {
  const turn = streamingTurn();
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

async function start() {
  $("chat-id").textContent = chatId;
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
