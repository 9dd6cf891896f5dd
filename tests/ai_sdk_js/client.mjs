// The AI SDK's own client code against a chat server: `node client.mjs PACKAGE BASE_URL PREFIX`.
//
// PACKAGE is one of the installed major versions (ai5, ai6, ai7). The server at BASE_URL serves
// POST /api/chat, GET /api/chat/:id/stream and POST /api/chat/:id/stop, and its model answers
// according to the prompt (see tests/test_ai_sdk.py). The scenarios use DefaultChatTransport
// (sendMessages, reconnectToStream) with readUIMessageStream, and the Chat class that useChat
// wraps (AbstractChat, with a plain state); the results are printed as one JSON object for the
// Python test to check.
const [pkg, base, prefix] = process.argv.slice(2);
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = await import(pkg);

const api = `${base}/api/chat`;
const transport = new DefaultChatTransport({ api });

const user = (text) => ({ id: `user-${text.length}`, role: "user", parts: [{ type: "text", text }] });
const textOf = (message) => (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");

// Read a chunk stream to its end: the chunks, the final message, the errors readUIMessageStream reported.
async function read(stream, { until } = {}) {
  const chunks = [];
  const errors = [];
  let stopReading = null;
  const stopped = new Promise((resolve) => (stopReading = resolve));
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk);
        controller.enqueue(chunk);
        if (until && until(chunks)) stopReading();
      },
    }),
  );
  let message = null;
  const reading = (async () => {
    for await (const snapshot of readUIMessageStream({ stream: recorded, onError: (e) => errors.push(e.message) })) {
      message = snapshot;
    }
  })();
  await Promise.race([reading, stopped]);
  return { chunks, message, errors, reading };
}

const send = (chatId, text, abortSignal) =>
  transport.sendMessages({ chatId, messages: [user(text)], trigger: "submit-message", messageId: undefined, abortSignal });

const summary = ({ chunks, message, errors }) => ({
  types: chunks.map((c) => c.type),
  errorTexts: chunks.filter((c) => c.type === "error").map((c) => c.errorText),
  messageId: chunks.find((c) => c.type === "start")?.messageId ?? null,
  text: textOf(message),
  errors,
});

const results = {};

// 1. A whole answer, then a reconnect after its end: null (the server answered 204).
{
  const chatId = `${prefix}-whole`;
  const first = await read(await send(chatId, "hello there"));
  results.whole = summary(first);
  results.whole.reconnectAfterEnd = (await transport.reconnectToStream({ chatId })) === null;
  results.neverUsed = (await transport.reconnectToStream({ chatId: `${prefix}-never` })) === null;
}

// 2. Leave mid-answer (the page reloads), reconnect: the answer from its start, once, same ids.
{
  const chatId = `${prefix}-reload`;
  const controller = new AbortController();
  const deltas = (chunks) => chunks.filter((c) => c.type === "text-delta").length;
  const head = await read(await send(chatId, "slow answer", controller.signal), { until: (c) => deltas(c) >= 3 });
  controller.abort();
  await head.reading.catch(() => {});
  const resumed = await read(await transport.reconnectToStream({ chatId }));
  results.reload = { head: summary(head), resumed: summary(resumed) };
  results.reload.reconnectAfterEnd = (await transport.reconnectToStream({ chatId })) === null;
}

// 3. The model fails mid-answer: an error part, for the creator and for a reconnect.
{
  const chatId = `${prefix}-fail`;
  results.fail = summary(await read(await send(chatId, "fail please")));
}

// 4. Stop from another request while the answer is written: an abort part.
{
  const chatId = `${prefix}-stop`;
  const deltas = (chunks) => chunks.filter((c) => c.type === "text-delta").length;
  const live = await read(await send(chatId, "slow answer to stop"), { until: (c) => deltas(c) >= 2 });
  const stop = await fetch(`${api}/${chatId}/stop`, { method: "POST" });
  await live.reading;
  results.stop = { ...summary(live), stopStatus: stop.status };
}

// 5. What useChat({ resume: true }) does on a reloaded page: a new Chat with the chat's id calls
//    resumeStream() while the answer is written, then the chat goes on; and a failure's status.
class State {
  constructor() {
    this.messages = [];
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = [...this.messages, message];
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  }
  snapshot(value) {
    return structuredClone(value);
  }
}
class Chat extends AbstractChat {
  constructor(id) {
    super({ id, transport, state: new State() });
  }
}
{
  const chatId = `${prefix}-chat`;
  const writer = new Chat(chatId);
  const sending = writer.sendMessage({ text: "slow answer for the chat class" });
  const started = Date.now();
  const answerSoFar = () => textOf(writer.messages.find((m) => m.role === "assistant"));
  while (answerSoFar().split(" ").length < 4 && Date.now() - started < 10000) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const reloaded = new Chat(chatId);
  await reloaded.resumeStream();
  await sending;
  const assistant = (chat) => chat.messages.filter((m) => m.role === "assistant").map(textOf);
  results.chat = {
    writer: assistant(writer),
    reloaded: assistant(reloaded),
    status: reloaded.status,
    error: reloaded.error?.message ?? null,
  };
  results.chat.sameId = writer.messages.at(-1)?.id === reloaded.messages.at(-1)?.id;
  const idle = new Chat(chatId);
  await idle.resumeStream();
  results.chat.idleMessages = idle.messages.length;
  const failing = new Chat(`${prefix}-chat-fail`);
  await failing.sendMessage({ text: "fail please" });
  results.chat.failStatus = failing.status;
  results.chat.failError = failing.error?.message ?? null;
}

console.log(JSON.stringify(results));
