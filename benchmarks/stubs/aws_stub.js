// Stand-in AWS endpoints for benchmarks, on loopback: Lambda Invoke and S3 ListObjectsV2.
//   node aws_stub.js [--keys N] [--invoke-ms MS] [--page-ms MS] [--fault-rate F] [--port P]
// Prints the port it listens on. Not a mock of behaviour hopper is tested for (moto does that);
// it only has to be fast and faithful enough that hopper, not the stub, is what gets measured.
//
// Lambda: POST /2015-03-31/functions/NAME/invocations answers 202 (Event) or 200 "null"
//   (RequestResponse) after --invoke-ms; a --fault-rate share answers 429
//   TooManyRequestsException with a Reason, as Lambda does when throttling.
// S3: GET /BUCKET?list-type=2 over a synthetic sorted key space of --keys keys, after
//   --page-ms: prefix, delimiter, start-after, continuation-token, max-keys, encoding-type=url.
//   With --objects DIR, GET /BUCKET/KEY answers the file DIR/BUCKET/KEY (GetObject).
// GET /stats returns counters as JSON; POST /reset zeroes them.
"use strict";
const http = require("http");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const KEYS = Number(args.keys || 100000);
const INVOKE_MS = Number(args["invoke-ms"] || 0);
const PAGE_MS = Number(args["page-ms"] || 0);
const FAULT_RATE = Number(args["fault-rate"] || 0);
// GetObject serves the files of this folder, if given (benchmarks of inventory reports).
const fs = require("fs");
const OBJECTS = args.objects ? require("path").resolve(args.objects) : null;

// Keys as S3 would sort them (UTF-8 byte order; every key here is ASCII, so JS order agrees).
// Ten top-level folders, like a dataset partitioned by day, a few names that need URL encoding.
const keys = [];
for (let i = 0; i < KEYS; i++) {
  const folder = `day=${String(i % 10).padStart(2, "0")}`;
  keys.push(`${folder}/part ${String(i).padStart(8, "0")}+v1.csv`);
}
keys.sort();
const stats = { invokes: 0, faults: 0, lists: 0, keys_listed: 0, gets: 0 };

function lowerBound(x) {  // first index with keys[i] > x
  let lo = 0, hi = keys.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (keys[mid] <= x) lo = mid + 1; else hi = mid; }
  return lo;
}
function xml(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
// S3's encoding-type=url: like encodeURIComponent, but a space becomes "+" and "/" stays.
function s3url(s) { return encodeURIComponent(s).replace(/%20/g, "+").replace(/%2F/g, "/"); }

function list(q) {
  const prefix = q.get("prefix") || "";
  const delimiter = q.get("delimiter") || "";
  const maxKeys = Math.min(1000, Number(q.get("max-keys") || 1000));
  const enc = q.get("encoding-type") === "url" ? s3url : (s) => s;
  const token = q.get("continuation-token");
  let after = token ? Buffer.from(token, "base64").toString() : (q.get("start-after") || "");
  if (prefix > after) after = prefix.length ? prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) - 1) + "\uffff" : "";
  let i = after === "" && !token && !q.get("start-after") ? 0 : lowerBound(after);
  const contents = [], prefixes = [];
  let last = null;
  while (i < keys.length && contents.length + prefixes.length < maxKeys) {
    const key = keys[i];
    if (!key.startsWith(prefix)) break;
    const cut = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
    if (cut >= 0) {
      const common = key.slice(0, cut + delimiter.length);
      prefixes.push(common);
      last = common;
      i = lowerBound(common + "\uffff");
    } else {
      contents.push(key);
      last = key;
      i += 1;
    }
  }
  const truncated = i < keys.length && keys[i].startsWith(prefix);
  stats.lists += 1;
  stats.keys_listed += contents.length;
  const out = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'];
  out.push(`<Name>bucket</Name><Prefix>${xml(enc(prefix))}</Prefix><KeyCount>${contents.length + prefixes.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys>`);
  if (delimiter) out.push(`<Delimiter>${xml(enc(delimiter))}</Delimiter>`);
  if (q.get("encoding-type") === "url") out.push("<EncodingType>url</EncodingType>");
  out.push(`<IsTruncated>${truncated}</IsTruncated>`);
  if (token) out.push(`<ContinuationToken>${xml(token)}</ContinuationToken>`);
  if (q.get("start-after")) out.push(`<StartAfter>${xml(enc(q.get("start-after")))}</StartAfter>`);
  if (truncated) out.push(`<NextContinuationToken>${Buffer.from(last).toString("base64")}</NextContinuationToken>`);
  for (const key of contents) {
    out.push(`<Contents><Key>${xml(enc(key))}</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;${(key.length * 2654435761 >>> 0).toString(16).padStart(32, "0")}&quot;</ETag><Size>${key.length * 10}</Size><StorageClass>STANDARD</StorageClass></Contents>`);
  }
  for (const p of prefixes) out.push(`<CommonPrefixes><Prefix>${xml(enc(p))}</Prefix></CommonPrefixes>`);
  out.push("</ListBucketResult>");
  return out.join("");
}

function later(ms, fn) { if (ms > 0) setTimeout(fn, ms); else fn(); }

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const url = new URL(req.url, "http://stub");
    const path = url.pathname;
    if (req.method === "POST" && path.endsWith("/invocations")) {
      stats.invokes += 1;
      if (FAULT_RATE > 0 && Math.random() < FAULT_RATE) {
        stats.faults += 1;
        const body = JSON.stringify({ Type: "User", message: "Rate Exceeded.", Reason: "ReservedFunctionConcurrentInvocationLimitExceeded" });
        return later(INVOKE_MS, () => {
          res.writeHead(429, { "Content-Type": "application/json", "x-amzn-ErrorType": "TooManyRequestsException", "x-amzn-RequestId": `f${stats.invokes}`, "Content-Length": Buffer.byteLength(body) });
          res.end(body);
        });
      }
      const sync = req.headers["x-amz-invocation-type"] === "RequestResponse";
      return later(INVOKE_MS, () => {
        const body = sync ? "null" : "";
        res.writeHead(sync ? 200 : 202, { "Content-Type": "application/json", "x-amzn-RequestId": `r${stats.invokes}`, "Content-Length": body.length });
        res.end(body);
      });
    }
    if (req.method === "GET" && path.endsWith("/configuration")) {
      const body = JSON.stringify({ FunctionName: path.split("/")[3], Timeout: 30 });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
      return res.end(body);
    }
    if (path === "/stats") {
      const body = JSON.stringify(stats);
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
      return res.end(body);
    }
    if (path === "/reset") {
      for (const k of Object.keys(stats)) stats[k] = 0;
      res.writeHead(204);
      return res.end();
    }
    if (req.method === "GET" && url.searchParams.get("list-type") === "2") {
      return later(PAGE_MS, () => {
        const body = list(url.searchParams);
        res.writeHead(200, { "Content-Type": "application/xml", "x-amz-request-id": `l${stats.lists}`, "Content-Length": Buffer.byteLength(body) });
        res.end(body);
      });
    }
    if (req.method === "GET" && OBJECTS) {
      // GetObject from --objects DIR: /BUCKET/KEY is the file DIR/BUCKET/KEY (an inventory report).
      const file = require("path").join(OBJECTS, decodeURIComponent(path.slice(1)));
      if (file.startsWith(OBJECTS) && fs.existsSync(file) && fs.statSync(file).isFile()) {
        stats.gets += 1;
        res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": fs.statSync(file).size, "ETag": '"stub"' });
        return fs.createReadStream(file).pipe(res);
      }
      const missing = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>stub</Message></Error>';
      res.writeHead(404, { "Content-Type": "application/xml", "Content-Length": missing.length });
      return res.end(missing);
    }
    const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>stub</Message></Error>';
    res.writeHead(501, { "Content-Type": "application/xml", "Content-Length": body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(args.port || 0), "127.0.0.1", () => console.log(server.address().port));
