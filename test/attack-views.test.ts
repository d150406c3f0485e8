import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { closeSync, constants, mkdirSync, openSync, truncateSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyInstance } from "fastify";
import { renderRecord } from "../src/commands/history.js";
import { giteaTargetFromEnv } from "../src/commands/plan-gitea.js";
import { createLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { loadManifest } from "../src/manifest/load.js";
import { type Agent, createAgent } from "../src/server/agent.js";
import { buildServer } from "../src/server/app.js";
import { CLI, PROJECT, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/**
 * Attacks on what the daemon shows (/status, /history, /metrics, /healthz) and on the read-only commands:
 * real HTTP on loopback, real files.
 */

const SECRET = "attack-views-webhook-secret-0123";
const TOKEN = "attack-views-status-token-0123456789";

let fx: Fixture;
let app: FastifyInstance | undefined;
let agent: Agent | undefined;
let logs: string[] = [];

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  logs = [];
});
afterEach(async () => {
  await app?.close();
  await agent?.close();
  app = undefined;
  agent = undefined;
  fx.cleanup();
});

/** The daemon in this process, /status and /metrics open to 10.99.0.0/16 and the token only. */
async function serveGuarded(): Promise<number> {
  const file = writeManifest(fx.dir, {
    webhook: {
      pollIntervalSeconds: 0,
      statusAccess: { allowFrom: ["10.99.0.0/16"], tokenFile: "/etc/deploy-agent/status-token" },
    },
    drift: { intervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
  const { manifest } = await loadManifest(file, { processEnv: {} });
  const root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
  const log = createLogger({ level: "debug", fd: 1, stream: { write: (line: string) => logs.push(line) } });
  agent = createAgent({
    manifest,
    repoDir: fx.clone,
    stateDir: path.join(fx.dir, "state"),
    root,
    dryRun: true,
    log,
  });
  app = buildServer({ manifest, secret: new Secret(SECRET), agent, log, statusToken: new Secret(TOKEN) });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  assert.ok(address && typeof address === "object");
  return address.port;
}

/** One GET written byte for byte (headers as latin1, as a client may send them); its status code. */
function rawGet(port: number, target: string, headers: Buffer): Promise<number> {
  return new Promise((done) => {
    const s = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    s.on("data", (d) => chunks.push(d));
    s.on("error", () => {});
    s.once("close", () =>
      done(Number(/^HTTP\/1\.1 (\d{3}) /.exec(Buffer.concat(chunks).toString("latin1"))?.[1] ?? 0)),
    );
    s.end(
      Buffer.concat([
        Buffer.from(`GET ${target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n`),
        headers,
        Buffer.from("\r\n"),
      ]),
    );
  });
}

describe("attack: the viewers' guard", () => {
  it("a bearer token of the right length in characters but not in bytes is refused (403), never an error", async () => {
    const port = await serveGuarded();
    // Node reads header bytes as latin1: 0xe9 is one character, two bytes once encoded as UTF-8.
    const forged = Buffer.concat([
      Buffer.from("authorization: Bearer "),
      Buffer.alloc(TOKEN.length, 0xe9),
      Buffer.from("\r\n"),
    ]);
    for (const target of ["/status", "/metrics", "/history"]) {
      assert.equal(await rawGet(port, target, forged), 403, target);
    }
    assert.equal(
      await rawGet(port, "/status", Buffer.from(`authorization: Bearer ${TOKEN}\r\n`)),
      200,
      "the token itself still opens /status",
    );
    assert.deepEqual(
      logs.filter((l) => /same byte length|"level":50/.test(l)),
      [],
      "no error logged for a forged header",
    );
  });
});

/** The CLI in a child process, killed after `ms`: the defect these look for is a read that never returns. */
function cliWithin(ms: number, args: string[]): Promise<{ code: number | null; out: string; ms: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", "--", CLI, ...args], {
    cwd: PROJECT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const kill = setTimeout(() => child.kill("SIGKILL"), ms);
  return new Promise((done) =>
    child.on("close", (code) => {
      clearTimeout(kill);
      done({ code, out, ms: Date.now() - started });
    }),
  );
}

/** A manifest and an empty state directory (0700) for the read-only commands. */
function hostFiles() {
  const manifest = writeManifest(fx.dir, {
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
  const stateDir = path.join(fx.dir, "state");
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const common = [
    "--config",
    manifest,
    "--repo",
    fx.clone,
    "--root",
    path.join(fx.dir, "root"),
    "--state-dir",
    stateDir,
  ];
  return { stateDir, common };
}

/** Lets a reader still blocked on a FIFO go (end of file), so nothing of the test hangs on. */
const release = (fifo: string) => {
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {}
};

describe("attack: status and history on a state directory they must not trust", () => {
  it("a FIFO at state.json: status says it cannot use it, at once, instead of waiting for a writer", async () => {
    const { stateDir, common } = hostFiles();
    const fifo = path.join(stateDir, "state.json");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const res = await cliWithin(15_000, ["status", "--json", ...common]);
    release(fifo);
    assert.equal(res.code, 0, res.out);
    const doc = JSON.parse(res.out) as { stateProblem: string | null };
    assert.match(doc.stateProblem ?? "", /state\.json is not a regular file/);
  });

  it("a state.json of 200 MiB is refused by its size, never read", async () => {
    const { stateDir, common } = hostFiles();
    const big = path.join(stateDir, "state.json");
    writeFileSync(big, "");
    truncateSync(big, 200 * 1024 * 1024);
    const res = await cliWithin(15_000, ["status", "--json", ...common]);
    assert.equal(res.code, 0, res.out);
    const doc = JSON.parse(res.out) as { stateProblem: string | null };
    assert.match(doc.stateProblem ?? "", /state\.json is 209715200 bytes, more than/);
  });

  it("a FIFO at the host's age key: status answers at once, without a recipient", async () => {
    const { common } = hostFiles();
    const keyDir = path.join(fx.dir, "root/etc/deploy-agent");
    mkdirSync(keyDir, { recursive: true });
    const fifo = path.join(keyDir, "age.key");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const res = await cliWithin(15_000, ["status", "--json", ...common]);
    release(fifo);
    assert.equal(res.code, 0, res.out);
    assert.equal((JSON.parse(res.out) as { ageRecipient: string | null }).ageRecipient, null);
  });

  it("a FIFO at history.jsonl: history fails HISTORY_UNREADABLE at once instead of waiting for a writer", async () => {
    const { stateDir, common } = hostFiles();
    const fifo = path.join(stateDir, "history.jsonl");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const res = await cliWithin(15_000, ["history", ...common]);
    release(fifo);
    assert.equal(res.code, 1, res.out);
    assert.match(res.out, /HISTORY_UNREADABLE.*history\.jsonl: not a regular file/);
  });
});

describe("attack: the health policy and the wall clock", () => {
  it("a wall clock set a day forward during a deploy does not make it look stuck; /healthz stays 200", async () => {
    const file = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          // A step that takes a moment: the deploy is running while the clock moves.
          validate: ["sh", "-c", "sleep 2", "{file}"],
        },
      ],
    });
    const { manifest } = await loadManifest(file, { processEnv: {} });
    const root = path.join(fx.dir, "root");
    mkdirSync(path.join(root, "var/www"), { recursive: true });
    const log = createLogger({ level: "warn", fd: 1, stream: { write: (l: string) => logs.push(l) } });
    agent = createAgent({
      manifest,
      repoDir: fx.clone,
      stateDir: path.join(fx.dir, "state"),
      root,
      dryRun: false,
      log,
    });
    agent.request({ kind: "poll" });
    for (let i = 0; i < 100 && agent.runner.state().running === null; i++) await sleep(10);
    assert.equal(agent.runner.state().running?.task, "deploy");
    // NTP stepping a clock that was a day behind (a container started with a wrong RTC).
    mock.timers.enable({ apis: ["Date"], now: Date.now() + 86_400_000 });
    try {
      assert.deepEqual(agent.health(), { ok: true });
    } finally {
      mock.timers.reset();
    }
    await agent.runner.idle();
  });
});

describe("attack: plan --post-gitea's event file", () => {
  it("a FIFO at GITHUB_EVENT_PATH is a reason at once, not a wait for a writer", async () => {
    const fifo = path.join(fx.dir, "event.json");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const env = {
      GITHUB_API_URL: "http://127.0.0.1:9/api/v1",
      GITEA_TOKEN: "t-123456789",
      GITHUB_REPOSITORY: "o/r",
      GITHUB_EVENT_PATH: fifo,
    };
    const outcome = await Promise.race([giteaTargetFromEnv(env), sleep(3000).then(() => "still waiting")]);
    release(fifo);
    assert.match(String(outcome), /the event file .* cannot be read: it is not a regular file/);
  });
});

describe("attack: a history record that would print a line of its own", () => {
  it("line breaks and tabs in a record's texts (a hand edit, an older agent) stay on the record's one line", () => {
    const text = renderRecord({
      v: 1,
      at: "2026-01-01T00:00:00.000Z",
      host: "lxctest",
      event: "suspend",
      trigger: { kind: "manual", user: "eve\tx" },
      revision: null,
      previousRevision: null,
      result: "suspended",
      verified: false,
      applied: false,
      error: null,
      steps: [],
      durationMs: 0,
      reason: "maintenance\n2026-01-02 00:00:00Z  run by alice  0123456789ab  succeeded, verified  0.8s",
    });
    assert.doesNotMatch(text, /[\n\t]/);
    assert.match(text, /^2026-01-01 00:00:00Z {2}suspend by eve x: maintenance 2026-01-02/);
  });
});
