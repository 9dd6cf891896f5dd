// A reader that follows the record protocol of the `@s2-dev/resumable-stream` package: read the
// stream from the beginning, skip command records (fence, trim), and stop at a terminal fence
// (a fence whose token starts with `end-` or `error-`).
//
// Usage: node resumer.mjs STREAM [TIMEOUT_MS] [TRANSPORT]
// TRANSPORT: "default" (the SDK's choice: S2S over HTTP/2 in Node) or "fetch" (SSE). Default: "default".
// Environment: S2_ACCESS_TOKEN, S2_BASIN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT.
// Prints one JSON line per non-empty data record, {"body": "..."}, then {"end": "<terminal fence>"}.
// Exits 3 if no terminal fence arrives within TIMEOUT_MS (default 20000).

import { S2 } from "@s2-dev/streamstore";

const [streamName, timeoutArg, transport = "default"] = process.argv.slice(2);
if (!streamName) {
  console.error("usage: node resumer.mjs STREAM [TIMEOUT_MS]");
  process.exit(2);
}
const timeoutMs = Number(timeoutArg ?? 20000);
const timer = setTimeout(() => {
  console.error(`resumer: no terminal fence within ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);

const s2 = new S2({
  accessToken: process.env.S2_ACCESS_TOKEN,
  endpoints: { account: process.env.S2_ACCOUNT_ENDPOINT, basin: process.env.S2_BASIN_ENDPOINT },
});
const streamOptions = transport === "fetch" ? { forceTransport: "fetch" } : {};
const stream = s2.basin(process.env.S2_BASIN).stream(streamName, streamOptions);

const isCommand = (record) => record.headers.length === 1 && record.headers[0][0] === "";

const session = await stream.readSession({ start: { from: { seqNum: 0 } } });
let end = null;
for await (const record of session) {
  if (isCommand(record)) {
    const [, op] = record.headers[0];
    if (op === "fence" && (record.body.startsWith("end-") || record.body.startsWith("error-"))) {
      end = record.body;
      break;
    }
    continue; // a session fence, or a trim
  }
  if (record.body) {
    console.log(JSON.stringify({ body: record.body }));
  }
}
await stream.close();
clearTimeout(timer);
if (end === null) {
  console.error("resumer: the read session ended without a terminal fence");
  process.exit(4);
}
console.log(JSON.stringify({ end }));
