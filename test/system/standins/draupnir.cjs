#!/usr/bin/env node
// Draupnir stand-in for the system tests (installed as /opt/draupnir/lib/index.js, started by the repository's
// draupnir.service as user draupnir). Like Draupnir it reads --draupnir-config at start and cannot log in
// without a real accessToken; /healthz on the config's health.healthz.port (8081 when absent) answers 200 once
// "synced", after the delay in /opt/draupnir/start-delay-ms (0 when absent), and 418 before.
const { readFileSync } = require("node:fs");
const { createServer } = require("node:http");

const file = process.argv[process.argv.indexOf("--draupnir-config") + 1];
const config = readFileSync(file, "utf8");
const token = /^accessToken:\s*"?([^"\s]+)"?\s*$/m.exec(config)?.[1];
if (!token || token === "REDACTED") {
  console.error("no usable accessToken in the config: cannot log in");
  process.exit(1);
}
const port = Number(/^\s+healthz:\s*\n(?:\s+\w+:.*\n)*?\s+port:\s*(\d+)/m.exec(config)?.[1] ?? 8081);
let delay = 0;
try {
  delay = Number(readFileSync("/opt/draupnir/start-delay-ms", "utf8").trim());
} catch {
  // no delay configured
}
const readyAt = Date.now() + delay;
createServer((req, res) => {
  res.statusCode = req.url === "/healthz" ? (Date.now() >= readyAt ? 200 : 418) : 404;
  res.end();
}).listen(port, "127.0.0.1");
console.log(`draupnir stand-in up, healthy in ${delay} ms`);
