// ai_sdk_chat's page: the AI SDK's Chat class (what useChat wraps) with its DefaultChatTransport.
//
// ai-sdk.js is the AI SDK's client, bundled from npm (see ../client). The page keeps the chat's
// messages in a plain state object and renders them on every change. On load it asks the server
// for the chat so far; if an answer is being written, chat.resumeStream() replays it from its start
// (GET /api/chat/<id>/stream), which is what useChat({ resume: true }) does. Stop POSTs to the
// server's stop route: the AI SDK's own stop() only disconnects this tab.
import { AbstractChat, DefaultChatTransport } from "./ai-sdk.js";

const $ = (id) => document.getElementById(id);
const chatId = (() => {
  const id = new URLSearchParams(location.search).get("chat");
  if (id && /^[A-Za-z0-9_-]{1,64}$/.test(id)) return id;
  const fresh = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  history.replaceState(null, "", `?chat=${fresh}`);
  return fresh;
})();

// The ChatState the Chat class needs: plain fields, rendered after every change.
class State {
  #messages;
  #status = "ready";
  #error = undefined;
  constructor(messages) {
    this.#messages = messages;
  }
  get messages() { return this.#messages; }
  set messages(value) { this.#messages = value; render(); }
  get status() { return this.#status; }
  set status(value) { this.#status = value; render(); }
  get error() { return this.#error; }
  set error(value) { this.#error = value; render(); }
  pushMessage(message) { this.messages = [...this.#messages, message]; }
  popMessage() { this.messages = this.#messages.slice(0, -1); }
  replaceMessage(index, message) { this.messages = this.#messages.map((m, i) => (i === index ? message : m)); }
  snapshot(value) { return structuredClone(value); }
}

class Chat extends AbstractChat {
  constructor(id, messages) {
    super({ id, transport: new DefaultChatTransport({ api: "/api/chat" }), state: new State(messages) });
  }
}

let chat = null;
let endings = {}; // assistant message id -> how it ended, as the server tells

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

function render() {
  if (!chat) return;
  $("messages").replaceChildren(
    ...chat.messages.map((message) => {
      const el = document.createElement("div");
      el.className = "message";
      el.dataset.role = message.role;
      el.dataset.id = message.id;
      el.textContent = textOf(message);
      const ending = endings[message.id] ?? message.metadata?.state;
      if (message.role === "assistant" && ending) {
        el.dataset.state = ending;
        const label = document.createElement("span");
        label.className = "state";
        label.textContent = ending;
        el.append(label);
      }
      return el;
    }),
  );
  const busy = chat.status === "submitted" || chat.status === "streaming";
  $("status").textContent = `status: ${chat.status}`;
  document.body.dataset.status = chat.status;
  $("error").textContent = chat.error ? chat.error.message : "";
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// How the last answer ended (completed, stopped, failed), from the server's history of the chat.
async function learnEndings() {
  const response = await fetch(`/api/chat/${chatId}`, { cache: "no-store" });
  const data = await response.json();
  for (const message of data.messages) if (message.metadata?.state) endings[message.id] = message.metadata.state;
  render();
  return data;
}

async function start() {
  const data = await learnEndings();
  chat = new Chat(chatId, data.messages);
  render();
  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || $("send").disabled) return;
    $("input").value = "";
    await chat.sendMessage({ text });
    await learnEndings();
  });
  $("stop").addEventListener("click", () => fetch(`/api/chat/${chatId}/stop`, { method: "POST" }));
  document.body.dataset.ready = "true";
  if (data.active) {
    document.body.dataset.resumed = "true";
    await chat.resumeStream();
    await learnEndings();
  }
}

start();
