// Drives the official S2 TypeScript SDK (@s2-dev/streamstore) against an S2-compatible server
// and prints one JSON object describing what it saw; tests/test_ts_sdk.py asserts on it.
//
// Usage: node sdk_check.mjs BASIN
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

const basinName = process.argv[2];
if (!basinName) {
  console.error("usage: node sdk_check.mjs BASIN");
  process.exit(2);
}

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

const stream = basin.stream("sdk", { forceTransport: "fetch" });

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
const writer = basin.stream("sdk", { forceTransport: "fetch" });
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

// Reconfigure the basin so reads no longer create streams.
result.reconfiguredBasin = await s2.basins.reconfigure({ basin: basinName, createStreamOnRead: false });
result.missingStream = await failure(() => basin.stream("missing", { forceTransport: "fetch" }).checkTail());

await stream.close();
await writer.close();
clearTimeout(timer);
console.log(JSON.stringify(result));
