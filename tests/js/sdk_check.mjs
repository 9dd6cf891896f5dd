// Drives the official S2 TypeScript SDK (@s2-dev/streamstore) against an S2-compatible server
// and prints one JSON object describing what it saw; tests/test_ts_sdk.py asserts on it.
//
// Usage: node sdk_check.mjs BASIN [TRANSPORT]
// TRANSPORT: "default" (the SDK's choice: S2S over HTTP/2 for sessions in Node) or "fetch"
// (forceTransport: "fetch": unary JSON and SSE). Default: "default".
// Environment: S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT (s2-lite style: one URL).
// BASIN must not exist yet; the script creates it through the SDK.

import {
  AppendInput,
  AppendRecord,
  FencingTokenMismatchError,
  RangeNotSatisfiableError,
  S2,
  S2Error,
  SeqNumMismatchError,
} from "@s2-dev/streamstore";

const TIMEOUT_MS = 30000;
const timer = setTimeout(() => {
  console.error(`sdk_check: timed out after ${TIMEOUT_MS} ms`);
  process.exit(3);
}, TIMEOUT_MS);

const [basinName, transport = "default"] = process.argv.slice(2);
if (!basinName || !["default", "fetch"].includes(transport)) {
  console.error("usage: node sdk_check.mjs BASIN [default|fetch]");
  process.exit(2);
}
const streamOptions = transport === "fetch" ? { forceTransport: "fetch" } : {};

const s2 = new S2({
  accessToken: process.env.S2_ACCESS_TOKEN,
  endpoints: { account: process.env.S2_ACCOUNT_ENDPOINT, basin: process.env.S2_BASIN_ENDPOINT },
  retry: { maxAttempts: 1 },
});

/** Run `fn`, which must fail; describe the error it threw. */
async function failure(fn) {
  try {
    await fn();
  } catch (error) {
    return {
      name: error.constructor.name,
      isS2Error: error instanceof S2Error,
      isFencingTokenMismatch: error instanceof FencingTokenMismatchError,
      isSeqNumMismatch: error instanceof SeqNumMismatchError,
      isRangeNotSatisfiable: error instanceof RangeNotSatisfiableError,
      status: error.status,
      code: error.code ?? null,
      expectedFencingToken: error.expectedFencingToken ?? null,
      expectedSeqNum: error.expectedSeqNum ?? null,
      tail: error.tail ? error.tail.seqNum : null,
    };
  }
  throw new Error("expected a failure");
}

const strings = (...bodies) => AppendInput.create(bodies.map((body) => AppendRecord.string({ body })));

const result = {};

// Basins.
const basinConfig = { createStreamOnAppend: true, createStreamOnRead: true };
result.ensureBasin = (await s2.basins.ensure({ basin: basinName, config: basinConfig })).result;
result.ensureBasinAgain = (await s2.basins.ensure({ basin: basinName, config: basinConfig })).result;
result.basinConfig = await s2.basins.getConfig({ basin: basinName });
result.createBasinTwice = await failure(() => s2.basins.create({ basin: basinName }));
result.basinNames = (await s2.basins.list({ prefix: basinName })).basins.map((b) => b.name);

// Streams.
const basin = s2.basin(basinName);
result.createdStream = (await basin.streams.create({ stream: "created" })).name;
result.ensureStream = (await basin.streams.ensure({ stream: "sdk" })).result;
result.ensureStreamAgain = (await basin.streams.ensure({ stream: "sdk" })).result;
result.streamConfig = await basin.streams.getConfig({ stream: "sdk" });
result.streamNames = (await basin.streams.list()).streams.map((s) => s.name);

const stream = basin.stream("sdk", streamOptions);

// Unary append, then an append session.
const ack = await stream.append(
  AppendInput.create([AppendRecord.string({ body: "one", headers: [["kind", "text"]] }), AppendRecord.string({ body: "two" })]),
);
result.appendAck = { start: ack.start.seqNum, end: ack.end.seqNum, tail: ack.tail.seqNum };
const session = await stream.appendSession();
const tickets = [await session.submit(strings("three")), await session.submit(strings("four"))];
result.sessionAcks = [];
for (const ticket of tickets) {
  result.sessionAcks.push((await ticket.ack()).start.seqNum);
}
await session.close();
result.tail = (await stream.checkTail()).tail.seqNum;

// Unary read.
const batch = await stream.read({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 10 } } });
result.read = batch.records.map((r) => ({ seqNum: r.seqNum, body: r.body, headers: r.headers }));
result.readBeyondTail = await failure(() => stream.read({ start: { from: { seqNum: 100 } } }));

// A read session that catches up, follows two live appends, and ends at its count limit.
const writer = basin.stream("sdk", streamOptions);
const readSession = await stream.readSession({
  start: { from: { seqNum: 0 } },
  stop: { limits: { count: 6 }, waitSecs: 10 },
});
result.session = [];
for await (const record of readSession) {
  result.session.push({ seqNum: record.seqNum, body: record.body });
  if (record.seqNum === 3) {
    await writer.append(strings("five"));
    await writer.append(strings("six"));
  }
}

// Fencing: a fence takes effect for the next batch; errors surface as the SDK's classes.
await stream.append(AppendInput.create([AppendRecord.fence("writer-1")]));
result.wrongToken = await failure(() => stream.append(AppendInput.create([AppendRecord.string({ body: "x" })], { fencingToken: "nope" })));
result.wrongSeqNum = await failure(() =>
  stream.append(AppendInput.create([AppendRecord.string({ body: "x" })], { fencingToken: "writer-1", matchSeqNum: 0 })),
);
result.fencedAppend = (
  await stream.append(AppendInput.create([AppendRecord.string({ body: "seven" })], { fencingToken: "writer-1", matchSeqNum: 7 }))
).start.seqNum;

// An append session gets the same 412 (over S2S, in a terminal frame).
const fencedSession = await stream.appendSession();
result.sessionWrongToken = await failure(async () => {
  const ticket = await fencedSession.submit(AppendInput.create([AppendRecord.string({ body: "x" })], { fencingToken: "nope" }));
  await ticket.ack();
});
await fencedSession.close().catch(() => {});

// A long-poll at the tail returns as soon as a record lands.
const pollFrom = (await stream.checkTail()).tail.seqNum;
const poll = stream.read({ start: { from: { seqNum: pollFrom } }, stop: { waitSecs: 10 } });
setTimeout(() => writer.append(strings("woken")), 300);
result.longPoll = (await poll).records.map((r) => ({ seqNum: r.seqNum, body: r.body }));

// Names that need percent-encoding.
const odd = basin.stream("chat/42 ü%?#", streamOptions);
await odd.append(strings("odd"));
const oddSession = await odd.readSession({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 1 } } });
result.oddName = [];
for await (const record of oddSession) {
  result.oddName.push(record.body);
}
await odd.close();

// Faults injected through the server's admin route apply to this transport too.
async function addFault(fault) {
  const response = await fetch(`${process.env.S2_ACCOUNT_ENDPOINT}/_faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(fault),
  });
  if (response.status !== 201) throw new Error(`fault refused: ${await response.text()}`);
}
const faulty = basin.stream("faulty", streamOptions);
await addFault({ op: "append", stream: "faulty", status: 503, times: 1 });
const faultySession = await faulty.appendSession();
result.appendSessionFault = await failure(async () => {
  const ticket = await faultySession.submit(strings("lost"));
  await ticket.ack();
});
await faultySession.close().catch(() => {});
result.afterFault = (await faulty.append(strings("kept"))).start.seqNum;
await addFault({ op: "read", stream: "faulty", status: 500, message: "injected", times: 1 });
result.readSessionFault = await failure(async () => {
  const faultyRead = await faulty.readSession({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 1 } } });
  for await (const record of faultyRead) {
    result.readAfterFault = record.body;
  }
});
await faulty.close();

// Bytes records (protobuf bodies on the fetch transport), read back as bytes, unary and in a session.
const binary = basin.stream("binary", streamOptions);
const binaryRecord = AppendRecord.bytes({ body: new Uint8Array([0, 255, 1]), headers: [["k", new Uint8Array([2, 0])]] });
await binary.append(AppendInput.create([binaryRecord]));
const binaryBatch = await binary.read({ start: { from: { seqNum: 0 } } }, { as: "bytes" });
result.binaryRead = binaryBatch.records.map((r) => ({ body: Array.from(r.body), headers: r.headers.map(([n, v]) => [Array.from(n), Array.from(v)]) }));
const binarySession = await binary.readSession({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 1 } } }, { as: "bytes" });
result.binarySession = [];
for await (const record of binarySession) {
  result.binarySession.push(Array.from(record.body));
}
await binary.close();

// Reconfigure the basin so reads no longer create streams.
result.reconfiguredBasin = await s2.basins.reconfigure({ basin: basinName, createStreamOnRead: false });
result.missingStream = await failure(() => basin.stream("missing", streamOptions).checkTail());

await stream.close();
await writer.close();
clearTimeout(timer);
console.log(JSON.stringify(result));
