import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CEILING } from "../src/server/connections.js";
import {
  hostRoot,
  type Served,
  serveArgs,
  startCli,
  unitEnvironment,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { rssMiB } from "./helpers/proc.js";

/**
 * The daemon's HTTP layer attacked the way its guards can be walked past: every spelling of a guarded path
 * the router accepts, and clients that feed their request a byte a second. Each attack runs against the
 * real `serve` process (the unit's environment) on loopback.
 */

const SECRET = "attack-http-webhook-secret-0123456789";
const TOKEN = "status-token-0123456789abcdef";

let fx: Fixture;
let root: string;
let daemon: Served | undefined;
let started = 0;

async function serve(webhook: Record<string, unknown>): Promise<number> {
  return (await serveWithPid(webhook)).port;
}

async function serveWithPid(webhook: Record<string, unknown>): Promise<{ port: number; pid: number }> {
  const file = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0, ...webhook },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = startCli(
    // A state directory of its own, so that each daemon's first run is a deploy that says when it is done.
    [...serveArgs(file, fx.clone, root), "--state-dir", path.join(fx.dir, `state-${started++}`)],
    unitEnvironment(),
  );
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  await daemon.waitFor(/"msg":"run finished"|"result"/, 20_000).catch(() => {});
  const port = Number(new URL(/"address":"(http:\/\/[^"]+)"/.exec(line)?.[1] ?? "").port);
  return { port, pid: daemon.child.pid ?? 0 };
}

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, SECRET);
});
afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  fx.cleanup();
});

interface Answer {
  status: number;
  head: string;
  body: string;
}

/** One request written exactly as given (request target included) on its own connection. */
function raw(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body: Buffer = Buffer.alloc(0),
): Promise<Answer> {
  return new Promise((done) => {
    const s = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const giveUp = setTimeout(() => s.destroy(), 5000);
    s.on("data", (d) => chunks.push(d));
    s.on("error", () => {});
    s.once("close", () => {
      clearTimeout(giveUp);
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      done({
        status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0),
        head: split < 0 ? text : text.slice(0, split),
        body: split < 0 ? "" : text.slice(split + 4),
      });
    });
    const lines = Object.entries({
      host: "127.0.0.1",
      connection: "close",
      ...(body.length ? { "content-length": String(body.length) } : {}),
      ...headers,
    }).map(([k, v]) => `${k}: ${v}\r\n`);
    s.end(Buffer.concat([Buffer.from(`${method} ${target} HTTP/1.1\r\n${lines.join("")}\r\n`), body]));
  });
}

/** What only the guarded documents contain: /status's fields and the metric names. */
const DOCUMENT = /deploy_agent_|"queue"|"conditions"|"lastRun"/;

/** Spellings of /status and /metrics that fastify's router sends to those routes. */
const ROUTED = [
  "/status",
  "/status?",
  "/status?x=1",
  "/status?/status",
  "/%73tatus",
  "/%73%74%61%74%75%73",
  "/sta%74us?a=b",
  "/status#fragment",
  "http://x/status",
  "http://x/%73tatus?y",
  "/metrics",
  "/metrics?",
  "/metrics?name[]=x",
  "/%6detrics",
  "/%6D%65%74%72%69%63%73?",
  "http://x/metrics",
];
/** Spellings it does not route there today; whatever it does with them, the answer must not differ by access. */
const ELSEWHERE = [
  "/STATUS",
  "/Status",
  "/status/",
  "//status",
  "/./status",
  "/x/../status",
  "/status;x",
  "/status%3F",
  "/status%00",
  "/status%20",
  "/%2fstatus",
  "*",
  "/METRICS",
  "/metrics/",
  "//metrics",
  "/metrics;x",
  "/metricsx",
];
const METHODS = ["GET", "HEAD", "POST", "OPTIONS", "DELETE"];

describe("attack: access is decided by route, never by spelling", () => {
  it("every spelling of /status and /metrics gets the plain path's answer, for a refused source and the token alike", async () => {
    writeFileSync(path.join(root, "etc/deploy-agent/status-token"), `${TOKEN}\n`, { mode: 0o600 });
    const port = await serve({
      statusAccess: { allowFrom: ["10.99.0.0/16"], tokenFile: "/etc/deploy-agent/status-token" },
    });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const leaks: string[] = [];
    const differ: string[] = [];
    for (const target of [...ROUTED, ...ELSEWHERE]) {
      for (const method of METHODS) {
        const refused = await raw(port, method, target);
        const viewer = await raw(port, method, target, auth);
        const what = `${method} ${target}: ${refused.status} refused, ${viewer.status} with the token`;
        if (refused.status === 200 || DOCUMENT.test(refused.body)) leaks.push(what);
        // 403 where the router reaches a guarded route; elsewhere what it answers anyone (404).
        const same = refused.status === 403 ? viewer.status === 200 : viewer.status === refused.status;
        const routed = ROUTED.includes(target) && (method === "GET" || method === "HEAD");
        if (!same || (routed && refused.status !== 403)) differ.push(what);
        if (method === "GET" && viewer.status === 200) assert.match(viewer.body, DOCUMENT, what);
      }
    }
    assert.deepEqual(leaks, [], "answered a refused source with the document");
    assert.deepEqual(differ, [], "an answer that depends on the spelling");
    assert.equal((await raw(port, "GET", "/healthz")).status, 200, "/healthz stays open");
    assert.equal((await raw(port, "GET", "/healthz?x=1")).status, 200, "/healthz stays open");

    // An allowed source needs no token, by every spelling.
    const open = await serve({ statusAccess: { allowFrom: ["127.0.0.0/8"] } });
    for (const target of ROUTED) assert.equal((await raw(open, "GET", target)).status, 200, target);

    // webhook.allowFrom shuts out the refused source by every spelling of every route, the hook's included,
    // even with a valid signature.
    const hook = await serve({ allowFrom: ["10.99.0.0/16"] });
    const body = pushBody({ after: "c".repeat(40) });
    const signed = giteaHeaders(body, SECRET);
    for (const target of [
      "/hooks/deploy",
      "/hooks/deploy?",
      "/hooks/deploy?x=1",
      "/hooks/%64eploy",
      "/%68ooks/deploy#x",
      "http://x/hooks/deploy",
      "/hooks/deploy/",
      "/healthz",
      "/status?",
      "/%6detrics",
    ]) {
      for (const method of ["POST", "GET", "HEAD"]) {
        const answer = await raw(
          hook,
          method,
          target,
          method === "POST" ? signed : {},
          method === "POST" ? body : undefined,
        );
        assert.equal(answer.status, 403, `${method} ${target} from a source not in webhook.allowFrom`);
      }
    }
    assert.doesNotMatch(daemon?.out() ?? "", /push accepted/);
  });
});

const MAX_CONNECTIONS = 16;
const HEADERS_S = 3;
const REQUEST_S = 5;
const IDLE_S = 2;
/** A timeout is enforced when the connection closes no earlier than it (less clock skew) and within 1 s. */
const EARLY_MS = 100;
const LATE_MS = 1000;

/** Request headers that never end: a request line, then one more byte of a header value each time. */
function* slowHeaders(): Generator<string> {
  yield* "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  for (;;) yield "a";
}

interface Drip {
  socket: Socket;
  /** When the connection was made (Date.now()). */
  opened: Promise<number>;
  /** When the first byte of `feed` went out (Date.now()). */
  fed: Promise<number>;
  /** Resolves with Date.now() at close; the test closes it itself after giveUpMs. */
  closed: Promise<number>;
  /** Everything the daemon sent. */
  answer(): string;
}

/**
 * A client that writes `preamble` at once, then after `delayMs` one byte of `feed` a second until the daemon
 * closes the connection or giveUpMs pass.
 */
function drip(
  port: number,
  opts: { preamble?: string; feed?: Iterator<string>; delayMs?: number; giveUpMs: number },
): Drip {
  const socket = connect(port, "127.0.0.1");
  let answer = "";
  let timer: NodeJS.Timeout | undefined;
  const giveUp = setTimeout(() => socket.destroy(), opts.giveUpMs);
  socket.on("data", (d) => {
    answer += d;
  });
  socket.on("error", () => {});
  let firstFed: (at: number) => void = () => {};
  const fed = new Promise<number>((done) => {
    firstFed = done;
  });
  const opened = new Promise<number>((done) =>
    socket.once("connect", () => {
      done(Date.now());
      if (opts.preamble) socket.write(opts.preamble);
      const feed = opts.feed;
      if (!feed) return;
      const next = () => {
        if (socket.destroyed) return;
        firstFed(Date.now());
        socket.write(feed.next().value as string);
        timer = setTimeout(next, 1000);
      };
      timer = setTimeout(next, opts.delayMs ?? 0);
    }),
  );
  const closed = new Promise<number>((done) =>
    socket.once("close", () => {
      clearTimeout(timer);
      clearTimeout(giveUp);
      done(Date.now());
    }),
  );
  return { socket, opened, fed, closed, answer: () => answer };
}

/** A fresh connection's GET /healthz: its status and how long the whole answer took. */
function probe(port: number, giveUpMs: number): Promise<{ status: number; ms: number }> {
  const t = Date.now();
  return new Promise((done) => {
    const s = connect(port, "127.0.0.1");
    let text = "";
    const giveUp = setTimeout(() => s.destroy(), giveUpMs);
    s.on("data", (d) => {
      text += d;
    });
    s.on("error", () => {});
    s.once("close", () => {
      clearTimeout(giveUp);
      done({ status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0), ms: Date.now() - t });
    });
    s.once("connect", () => s.end("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  });
}

interface Flood {
  /** How long each drip connection was open, in ms. */
  lifetimes: number[];
  probes: { status: number; ms: number }[];
  /** Probes that ended while every client was still flooding. */
  duringFlood: number;
  /** How long the flood lasted (until a client reached its bound). */
  ms: number;
  peakRss: number;
}

/**
 * `clients` clients feeding request headers a byte a second, each reconnecting as soon as it is closed, for
 * `ms` or 1,500 connections each, while /healthz is probed on a fresh connection every 200 ms.
 */
async function flood(port: number, pid: number, clients: number, ms: number): Promise<Flood> {
  const began = Date.now();
  const until = began + ms;
  let firstStopped = Number.POSITIVE_INFINITY;
  const lifetimes: number[] = [];
  let peakRss = rssMiB(pid);
  const client = async () => {
    for (let i = 0; i < 1500 && Date.now() < until; i++) {
      const d = drip(port, { feed: slowHeaders(), giveUpMs: Math.max(1, until - Date.now()) });
      const opened = await Promise.race([d.opened, d.closed.then(() => 0)]);
      const closed = await d.closed;
      if (opened) lifetimes.push(closed - opened);
    }
    firstStopped = Math.min(firstStopped, Date.now());
  };
  const watch = setInterval(() => {
    peakRss = Math.max(peakRss, rssMiB(pid));
  }, 100);
  const probes: { status: number; ms: number; end: number }[] = [];
  const prober = async () => {
    await sleep(250);
    while (Date.now() < until - 250) {
      probes.push({ ...(await probe(port, 2 * HEADERS_S * 1000 + 2000)), end: Date.now() });
      await sleep(200);
    }
  };
  await Promise.all([...Array.from({ length: clients }, client), prober()]);
  clearInterval(watch);
  return {
    lifetimes,
    probes,
    duringFlood: probes.filter((p) => p.end < firstStopped).length,
    ms: Math.min(firstStopped, until) - began,
    peakRss,
  };
}

describe("attack: clients that feed their request a byte a second", () => {
  it("headers, request and idle timeouts are enforced within a second; /healthz answers while 2 × and 5 × maxConnections drip and reconnect", async () => {
    const { port, pid } = await serveWithPid({
      limits: {
        maxConnections: MAX_CONNECTIONS,
        headersTimeoutSeconds: HEADERS_S,
        requestTimeoutSeconds: REQUEST_S,
        idleTimeoutSeconds: IDLE_S,
      },
    });
    const giveUpMs = (REQUEST_S + 4) * 1000;

    // Below the connection limit: each kind of slow client, cut by its own timeout.
    const headers = Array.from({ length: 4 }, () => drip(port, { feed: slowHeaders(), giveUpMs }));
    const silent = drip(port, { giveUpMs });
    const body = Array.from({ length: 2 }, () =>
      drip(port, {
        preamble:
          "POST /hooks/deploy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n",
        feed: (function* () {
          for (;;) yield "{";
        })(),
        delayMs: 1000,
        giveUpMs,
      }),
    );
    const idle = Array.from({ length: 2 }, () =>
      drip(port, { preamble: "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", giveUpMs }),
    );
    // Idle for a moment after one request, then the next request's headers a byte a second.
    const idleThenSlow = drip(port, {
      preamble: "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
      feed: slowHeaders(),
      delayMs: 500,
      giveUpMs,
    });
    const answered = async (d: Drip) => {
      while (!d.answer().includes('{"status":"ok"}') && !d.socket.destroyed) await sleep(5);
      return Date.now();
    };
    const cut = async (d: Drip, from: Promise<number>, seconds: number, what: string) => {
      const start = await from;
      const ms = (await d.closed) - start;
      assert.ok(
        ms >= seconds * 1000 - EARLY_MS && ms <= seconds * 1000 + LATE_MS,
        `${what}: closed ${ms} ms after it began (timeout ${seconds} s)`,
      );
      return ms;
    };
    const times = await Promise.all([
      ...headers.map((d) => cut(d, d.opened, HEADERS_S, "a byte of header a second")),
      cut(silent, silent.opened, HEADERS_S, "a connection that sends nothing"),
      ...body.map((d) => cut(d, d.opened, REQUEST_S, "complete headers, then a byte of body a second")),
      ...idle.map((d) => cut(d, answered(d), IDLE_S, "an idle keep-alive connection")),
      // Timed from its first byte, not from the first answer: under load that answer can come late.
      cut(idleThenSlow, idleThenSlow.fed, HEADERS_S, "a second request's headers a byte a second"),
    ]);
    for (const d of headers) assert.match(d.answer(), /^HTTP\/1\.1 408 /);

    // Twice maxConnections clients feeding headers a byte a second, each reconnecting as soon as it is
    // closed; then more than the ceiling of open connections, where only eviction lets a probe in.
    const idleRss = rssMiB(pid);
    const twice = await flood(port, pid, 2 * MAX_CONNECTIONS, (HEADERS_S + 2) * 1000);
    const beyond = await flood(port, pid, (CEILING + 1) * MAX_CONNECTIONS, (HEADERS_S + 1) * 1000);
    const metrics = await raw(port, "GET", "/metrics");
    const counter = (name: string) =>
      Number(
        new RegExp(`^deploy_agent_connections_${name}_total\\{[^}]*\\} (\\d+)$`, "m").exec(metrics.body)?.[1],
      );
    console.log(
      `# attack: timeouts ${times.join(", ")} ms; ${counter("evicted")} evicted, ${counter("refused")} refused; ` +
        `RSS ${idleRss.toFixed(0)} -> ${Math.max(twice.peakRss, beyond.peakRss).toFixed(0)} MiB`,
    );
    for (const [what, f] of [
      ["2 × maxConnections", twice],
      [`${CEILING + 1} × maxConnections`, beyond],
    ] as const) {
      console.log(
        `# attack: ${what} drip clients: ${f.lifetimes.length} connections in ${f.ms} ms, longest ${Math.max(...f.lifetimes)} ms; ` +
          `probes ${f.probes.map((p) => `${p.status}/${p.ms}`).join(" ")}`,
      );
      assert.ok(f.duringFlood >= 8, `${what}: ${f.duringFlood} probes while every client was flooding`);
      for (const p of f.probes) {
        assert.equal(p.status, 200, `${what}: a /healthz probe got ${p.status} after ${p.ms} ms`);
        assert.ok(p.ms <= 2 * HEADERS_S * 1000, `${what}: a /healthz probe took ${p.ms} ms`);
      }
      assert.ok(
        Math.max(...f.lifetimes) <= HEADERS_S * 1000 + LATE_MS,
        `${what}: a drip connection lived ${Math.max(...f.lifetimes)} ms`,
      );
      assert.ok(
        f.peakRss < idleRss + 64,
        `${what}: RSS ${idleRss.toFixed(0)} -> ${f.peakRss.toFixed(0)} MiB`,
      );
    }
    assert.ok(counter("evicted") > 0, "evictions are counted");
  });

  it("a client that pipelines requests and hangs up before their answers leaves no slot taken", async () => {
    const port = await serve({ limits: { maxConnections: MAX_CONNECTIONS } });
    const pipelined = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(20);
    for (let i = 0; i < 2 * MAX_CONNECTIONS; i++) {
      await new Promise<void>((done) => {
        const s = connect(port, "127.0.0.1");
        s.on("error", () => {});
        // Gone at the first answer, while the others are still queued behind it.
        s.once("data", () => s.destroy());
        s.once("close", () => done());
        s.once("connect", () => s.write(pipelined));
      });
    }
    // With any slot still counted as taken, one of maxConnections requests with a body at once is refused.
    // The server sees the last hang-ups a moment after the clients do: a few tries, a second at most.
    const body = Buffer.from("{}");
    const batch = () =>
      Promise.all(
        Array.from({ length: MAX_CONNECTIONS }, () =>
          raw(port, "POST", "/hooks/deploy", { "content-type": "application/json" }, body),
        ),
      );
    let answers = await batch();
    for (let i = 0; i < 10 && answers.some((a) => a.status !== 401); i++) {
      await sleep(100);
      answers = await batch();
    }
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(MAX_CONNECTIONS).fill(401),
      "maxConnections requests with a body at once are all read (and refused by the HMAC)",
    );
  });

  it("at most maxConnections requests with a body are in progress; a request without one is still answered", async () => {
    const port = await serve({ limits: { maxConnections: MAX_CONNECTIONS, requestTimeoutSeconds: 30 } });
    const post = (length: number) =>
      `POST /hooks/deploy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
    // Every slot holds a request whose body comes a byte a second.
    const slow = Array.from({ length: MAX_CONNECTIONS }, () =>
      drip(port, {
        preamble: post(4096),
        feed: (function* () {
          for (;;) yield " ";
        })(),
        giveUpMs: 20_000,
      }),
    );
    await Promise.all(slow.map((d) => d.opened));
    await sleep(500);
    const body = Buffer.from("{}");
    const refused = await raw(port, "POST", "/hooks/deploy", { "content-type": "application/json" }, body);
    assert.equal(refused.status, 0, "one request with a body more: closed without an answer");
    assert.equal((await raw(port, "GET", "/healthz")).status, 200, "a request without a body: answered");
    for (const d of slow) d.socket.destroy();
    await Promise.all(slow.map((d) => d.closed));
    // The server sees the hang-ups a moment after the clients do: a few tries, a second at most.
    let after = await raw(port, "POST", "/hooks/deploy", { "content-type": "application/json" }, body);
    for (let i = 0; i < 10 && after.status !== 401; i++) {
      await sleep(100);
      after = await raw(port, "POST", "/hooks/deploy", { "content-type": "application/json" }, body);
    }
    assert.equal(after.status, 401, "slots free again: the unsigned body is read and refused by the HMAC");
    const metrics = await raw(port, "GET", "/metrics");
    assert.match(metrics.body, /^deploy_agent_connections_refused_total\{[^}]*\} 1$/m);
  });
});
