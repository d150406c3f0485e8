#!/usr/bin/env node
// LiveKit stand-in for the system tests (installed as /usr/local/bin/livekit-server). Like livekit-server it
// reads --config: it exports livekit_participant_total and livekit_room_total on prometheus_port's /metrics
// (6789 when absent) and listens for RTC over TCP on rtc.tcp_port (7881 when absent). The participant count
// is read from /etc/livekit/participants at every scrape, so a test can hold a "call" open or end it.
const { readFileSync } = require("node:fs");
const { createServer } = require("node:http");
const net = require("node:net");

const config = readFileSync(process.argv[process.argv.indexOf("--config") + 1], "utf8");
const metricsPort = Number(/^prometheus_port:\s*(\d+)/m.exec(config)?.[1] ?? 6789);
const rtcPort = Number(/^rtc:\s*\n(?:\s+\w+:.*\n)*?\s+tcp_port:\s*(\d+)/m.exec(config)?.[1] ?? 7881);
const participants = () => Number(readFileSync("/etc/livekit/participants", "utf8").trim() || "0");
createServer((_req, res) => {
  const n = participants();
  res.setHeader("content-type", "text/plain; version=0.0.4");
  res.end(
    `# HELP livekit_participant_total Number of participants\n# TYPE livekit_participant_total gauge\nlivekit_participant_total{node_id="ND_test",node_type="MEDIA"} ${n}\n# TYPE livekit_room_total gauge\nlivekit_room_total{node_id="ND_test",node_type="MEDIA"} ${n ? 1 : 0}\n`,
  );
}).listen(metricsPort, "127.0.0.1");
net.createServer((socket) => socket.on("error", () => {})).listen(rtcPort, "127.0.0.1");
console.log(`livekit-server stand-in up (pid ${process.pid})`);
