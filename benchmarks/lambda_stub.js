// A stand-in Lambda endpoint for benchmarks: answers Invoke after a fixed latency, as the
// real service's round trip would, so dispatch concurrency can be measured. Loopback only.
//   node benchmarks/lambda_stub.js PORT LATENCY_MS
const http = require("http");
const port = Number(process.argv[2] || 0);
const latency = Number(process.argv[3] || 20);
let invokes = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.method === "GET" && req.url.includes("/configuration")) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ FunctionName: "stub", Timeout: 30 }));
      return;
    }
    if (req.method === "POST" && req.url.endsWith("/invocations")) {
      invokes += 1;
      setTimeout(() => {
        res.writeHead(202, { "Content-Type": "application/json", "x-amzn-RequestId": String(invokes) });
        res.end("");
      }, latency);
      return;
    }
    if (req.url === "/count") {
      res.writeHead(200);
      res.end(String(invokes));
      return;
    }
    res.writeHead(404);
    res.end("{}");
  });
});
server.listen(port, "127.0.0.1", () => {
  console.log(server.address().port);
});
