// An emulation of `@s2-dev/resumable-stream` 3.0.2's generic resumer (createResumableStream and resumeStream in
// its src/index.ts and src/protocol.ts), for the reliability suite's mixed-producer tests. That package is not
// installable from the npm registry this project can reach (E404), so this script makes the same calls on the
// same official SDK, `@s2-dev/streamstore`, in the same order:
//
//   create: read the last record (tailOffset 1, count 1); a terminal fence (`end-`/`error-`) means "done", null.
//           Append the fence `session-<5 base36>` with fencingToken "" (no matchSeqNum). On a fencing mismatch,
//           resume instead. Only then call makeStream() and tee it: one branch goes to the caller, the other is
//           persisted through an append session, a BatchTransform (S2_BATCH_SIZE records, default 10;
//           S2_LINGER_DURATION_MS, default 500) fenced with the session token, matchSeqNum from 1, and a final
//           fence `end-<5 base36>` (or `error-<5 base36>` if the source threw). Nothing is written while the
//           source is idle: no heartbeat.
//   resume: a read session from seqNum 0 as strings; skip fences, trims and empty bodies; end at a terminal fence.
//
// Usage: node foreign_stream.mjs create STREAM STEPS_JSON | node foreign_stream.mjs resume STREAM
// STEPS_JSON: a list of chunks (strings), pauses (numbers, in ms) and {"throw": "message"}.
// Prints one JSON object per line: {"created": token} | {"resumed": true} | {"done": true}, then {"chunk": ...}
// for each chunk its caller reads, then {"persisted": true} or {"persist_error": "..."}, or for resume {"end": token}.
// Environment: S2_ACCESS_TOKEN, S2_BASIN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT; GATE (the test's, not the
// package's): a file to wait for before starting, so that a test can line this process up with another.

import {
  AppendInput,
  AppendRecord,
  BatchTransform,
  FencingTokenMismatchError,
  Producer,
  RangeNotSatisfiableError,
  S2,
  SeqNumMismatchError,
} from "@s2-dev/streamstore";

const [mode, streamName, stepsJson] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const token = () => Math.random().toString(36).slice(2, 7);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const s2 = new S2({
  accessToken: process.env.S2_ACCESS_TOKEN,
  endpoints: { account: process.env.S2_ACCOUNT_ENDPOINT, basin: process.env.S2_BASIN_ENDPOINT },
});
const basin = process.env.S2_BASIN;
const batchSize = Number.parseInt(process.env.S2_BATCH_SIZE ?? "10", 10);
const lingerDuration = Number.parseInt(process.env.S2_LINGER_DURATION_MS ?? "500", 10);

const isFence = (r) => r.headers?.length === 1 && r.headers[0][0] === "" && r.headers[0][1] === "fence";
const isTrim = (r) => r.headers?.length === 1 && r.headers[0][0] === "" && r.headers[0][1] === "trim";
const isTerminal = (r) => Boolean(r.body?.startsWith("end-") || r.body?.startsWith("error-"));

function makeStream(steps) {
  let i = 0;
  return new ReadableStream({
    async pull(controller) {
      while (i < steps.length) {
        const step = steps[i++];
        if (typeof step === "number") {
          await sleep(step);
        } else if (typeof step === "string") {
          controller.enqueue(step);
          return;
        } else {
          controller.error(new Error(step.throw));
          return;
        }
      }
      controller.close();
    },
  });
}

async function* iterate(stream) {
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

async function persist(source, fencingToken) {
  const handle = s2.basin(basin).stream(streamName);
  try {
    const session = await handle.appendSession();
    const transform = new BatchTransform({
      lingerDurationMillis: lingerDuration,
      maxBatchRecords: batchSize,
      fencingToken,
      matchSeqNum: 1,
    });
    const producer = new Producer(transform, session);
    let sourceError;
    try {
      for await (const value of iterate(source)) {
        await producer.submit(AppendRecord.string({ body: value }));
      }
    } catch (error) {
      sourceError = error;
    }
    const errors = [];
    try {
      await producer.submit(AppendRecord.fence(`${sourceError !== undefined ? "error" : "end"}-${token()}`));
    } catch (error) {
      errors.push(error);
    }
    try {
      await producer.close();
    } catch (error) {
      errors.push(error);
    }
    if (errors.some((error) => error instanceof SeqNumMismatchError)) return "seq_num_mismatch";
    if (errors.length) throw errors[0];
    return null;
  } finally {
    await handle.close();
  }
}

async function resume() {
  const handle = s2.basin(basin).stream(streamName);
  let end = null;
  try {
    const session = await handle.readSession({ start: { from: { seqNum: 0 } } }, { as: "string" });
    for await (const record of session) {
      if (isFence(record)) {
        if (isTerminal(record)) {
          end = record.body;
          break;
        }
        continue;
      }
      if (isTrim(record) || !record.body) continue;
      out({ chunk: record.body });
    }
  } finally {
    await handle.close();
  }
  out({ end });
}

async function create(steps) {
  const stream = s2.basin(basin).stream(streamName);
  const sessionToken = "session-" + token();
  try {
    const last = await stream.read({ start: { from: { tailOffset: 1 } }, stop: { limits: { count: 1 } } });
    if (last.records?.length && isFence(last.records[0]) && isTerminal(last.records[0])) {
      out({ done: true });
      return;
    }
  } catch (error) {
    if (!(error instanceof RangeNotSatisfiableError)) {
      out({ error: String(error) });
      return;
    }
  }
  try {
    await stream.append(AppendInput.create([AppendRecord.fence(sessionToken, Date.now())], { fencingToken: "" }));
  } catch (error) {
    if (error instanceof FencingTokenMismatchError) {
      out({ resumed: true });
      await resume();
      return;
    }
    out({ error: String(error) });
    return;
  }
  out({ created: sessionToken });
  const [persistent, client] = makeStream(steps).tee();
  const persisted = persist(persistent, sessionToken).then(
    (mismatch) => (mismatch ? { persist_error: mismatch } : { persisted: true }),
    (error) => ({ persist_error: `${error?.name}: ${error?.message}` }),
  );
  try {
    for await (const chunk of iterate(client)) out({ chunk });
  } catch (error) {
    out({ source_error: String(error?.message ?? error) });
  }
  out(await persisted);
}

const timer = setTimeout(() => {
  out({ error: "timed out" });
  process.exit(3);
}, 120_000);
if (process.env.GATE) {
  const { existsSync } = await import("node:fs");
  console.log(JSON.stringify({ ready: true }));
  while (!existsSync(process.env.GATE)) await sleep(2);
}
if (mode === "create") await create(JSON.parse(stepsJson));
else if (mode === "resume") await resume();
else {
  console.error("usage: node foreign_stream.mjs create STREAM STEPS_JSON | resume STREAM");
  process.exit(2);
}
clearTimeout(timer);
