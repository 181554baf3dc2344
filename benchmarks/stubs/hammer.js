// Measures how many requests a second the stub itself can answer, so a benchmark can show
// that the stub is not what limits hopper. Keep-alive, CONCURRENCY requests in flight.
//   node hammer.js URL METHOD CONCURRENCY SECONDS
"use strict";
const http = require("http");
const [url, method, concurrency, seconds] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
const target = new URL(url);
const end = Date.now() + Number(seconds) * 1000;
let done = 0;
function one() {
  if (Date.now() >= end) return finish();
  const req = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method, agent,
    headers: { "Content-Type": "application/json", "X-Amz-Invocation-Type": "Event" } }, (res) => {
    res.resume();
    res.on("end", () => { done += 1; one(); });
  });
  req.end(method === "POST" ? '{"dataset_prefix":"x"}' : undefined);
}
let running = Number(concurrency);
function finish() { running -= 1; if (running === 0) { console.log((done / Number(seconds)).toFixed(0)); process.exit(0); } }
for (let i = 0; i < Number(concurrency); i++) one();
