import assert from "node:assert/strict";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { stringify } from "yaml";
import { runCli } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/**
 * `fleet status` and `fleet wait` against agents that answer whatever an attacker wants: one real HTTP server on
 * loopback plays every hostile host (a route per host name), and the real CLI asks it. Each host's manifest is a
 * real file of a real clone. Whatever a host sends, the operator's terminal shows one line per host, without
 * escape sequences; memory and time are the command's own.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const routes = new Map<string, Handler>();
/** Requests the collector (where hostile hosts redirect to) received, with their Authorization header. */
const collected: (string | undefined)[] = [];
let server: Server;
let base: string;
let fx: Fixture;
let head: string;
let old: string;

before(async () => {
  server = createServer((req, res) => {
    const name = /^\/([\w-]+)\//.exec(req.url ?? "")?.[1] ?? "";
    if (name === "collector") {
      collected.push(req.headers.authorization);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(status(head)));
      return;
    }
    const handler = routes.get(name);
    if (handler) handler(req, res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  old = git(fx.pusher, "rev-parse", "HEAD");
  head = fx.push({ "landing/index.html": "<p>v2</p>\n" });
  routes.clear();
  collected.length = 0;
});
afterEach(() => {
  server.closeAllConnections();
  fx.cleanup();
});

/** A valid /status of a host that applied `rev` with one step. */
function status(rev: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    deployedRevision: rev,
    suspended: null,
    lastError: null,
    health: { ok: true },
    lastRun: null,
    steps: [
      {
        name: "landing",
        kind: "file",
        lastAppliedRevision: rev,
        lastAttemptedRevision: rev,
        lastResult: null,
      },
    ],
    ...over,
  };
}

const json =
  (doc: unknown): Handler =>
  (_req, res) =>
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(doc));

/** config/<name>.yaml for each host, its publicUrl the hostile server's route of that name (or as given). */
function hosts(spec: Record<string, Handler | { url?: string; text?: string }>): void {
  const dir = path.join(fx.pusher, "config");
  mkdirSync(dir, { recursive: true });
  for (const [name, h] of Object.entries(spec)) {
    if (typeof h === "function") routes.set(name, h);
    const doc =
      typeof h === "function"
        ? stringify({ version: 1, host: name, publicUrl: `${base}/${name}` })
        : (h.text ?? stringify({ version: 1, host: name, ...(h.url ? { publicUrl: h.url } : {}) }));
    writeFileSync(path.join(dir, `${name}.yaml`), doc);
  }
}

const fleet = (...args: string[]) => runCli(["fleet", ...args, "--repo", fx.pusher]);
/** A control character other than the line break, a line or paragraph separator, or a bidi control. */
const drives = (text: string) => /[^\P{Cc}\n]|[\p{Zl}\p{Zp}\u202a-\u202e\u2066-\u2069]/u.test(text);
const lineOf = (stdout: string, host: string) => stdout.split("\n").filter((l) => l.startsWith(`${host} `));

describe("fleet against hostile bodies", () => {
  it("100 MB is cut at 4 MiB, one byte a second ends at the ask's deadline, and neither holds the others", async () => {
    let sent = 0;
    let slowFor = 0;
    hosts({
      huge: (_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => {
          while (sent < 100 * 1024 * 1024 && !res.destroyed) {
            sent += chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
          res.end();
        };
        pump();
      },
      slow: (req, res) => {
        const asked = Date.now();
        req.socket.on("close", () => {
          slowFor = Date.now() - asked;
        });
        res.writeHead(200, { "content-type": "application/json" });
        const tick = setInterval(() => (res.destroyed ? clearInterval(tick) : res.write(" ")), 1000);
        res.on("close", () => clearInterval(tick));
      },
      fine: json(status(head)),
    });
    const res = await fleet("status");
    assert.equal(res.code, 1, res.stderr);
    assert.match(
      lineOf(res.stdout, "huge")[0] ?? "",
      /^huge +HTTP_REFUSED: .*\/huge\/status answered more than 4194304 bytes$/,
    );
    assert.match(
      lineOf(res.stdout, "slow")[0] ?? "",
      /^slow +HTTP_UNAVAILABLE: .*\/slow\/status unreachable: timed out after 3000 ms/,
    );
    assert.match(lineOf(res.stdout, "fine")[0] ?? "", /up to date/);
    assert.ok(sent < 20 * 1024 * 1024, `the body was not read on (${sent} bytes sent)`);
    assert.ok(
      slowFor > 2500 && slowFor < 4500,
      `the slow body was cut at the ask's deadline (${slowFor} ms)`,
    );
  });

  it("not JSON, the wrong shape, deep nesting, numbers for strings and a revision that is not a commit id: that host's line, never INTERNAL", async () => {
    hosts({
      html: (_req, res) => res.writeHead(200).end("<html>hello</html>"),
      array: json([status(head)]),
      deep: (_req, res) => res.writeHead(200).end(`{"steps":${"[".repeat(200_000)}${"]".repeat(200_000)}}`),
      number: json(status(head, { deployedRevision: 12345 })),
      reason: json(status(head, { suspended: { reason: 7, since: "2026-01-01T00:00:00.000Z" } })),
      option: json(status("--output=/tmp/owned", { steps: [] })),
      upper: json(status(head.toUpperCase())),
    });
    const res = await fleet("status", "--json");
    assert.equal(res.code, 1, res.stderr);
    assert.equal(res.stderr, "");
    const doc = JSON.parse(res.stdout) as {
      hosts: { host: string; reachable: boolean; problem: string; code: string }[];
    };
    assert.ok(
      doc.hosts.every((h) => h.code === "HTTP_REFUSED"),
      "each problem has its code",
    );
    const problem = (h: string) => doc.hosts.find((x) => x.host === h)?.problem ?? "";
    assert.match(problem("html"), /answered something that is not JSON/);
    assert.match(problem("array"), /not an agent's status: the document: .*expected object/);
    assert.match(problem("deep"), /not an agent's status: /);
    assert.match(problem("number"), /deployedRevision: .*expected string/);
    assert.match(problem("reason"), /suspended\.reason: .*expected string/);
    assert.match(problem("option"), /deployedRevision: not a commit id/);
    assert.match(problem("upper"), /deployedRevision: not a commit id/);
    assert.ok(doc.hosts.every((h) => !h.reachable));
  });
});

/** Every kind of text that could drive a terminal or fake a line, in one string. */
const HOSTILE =
  "a\nfine     0123456789ab “forged”; up to date\rb\u001b]0;owned\u0007c\u001b[2Jd\u202ee\u2066f\u2028g\u0085h";

describe("fleet against terminal injection", () => {
  it("every text a host sends is one line on its own row: no line break, carriage return, escape sequence or bidi control", async () => {
    const evil = status(head, {
      steps: [
        {
          name: `landing${HOSTILE}`,
          kind: "file",
          lastAppliedRevision: old,
          lastAttemptedRevision: head,
          lastResult: {
            outcome: "failed",
            revision: head,
            reason: HOSTILE,
            code: `CODE${HOSTILE}`,
            message: HOSTILE,
            at: "2026-01-01T00:00:00.000Z",
            durationMs: 1,
            items: [],
          },
        },
      ],
      lastError: { code: `E${HOSTILE}`, message: HOSTILE, at: "2026-01-01T00:00:00.000Z" },
      suspended: { reason: HOSTILE, since: "2026-01-01T00:00:00.000Z" },
      pinned: {
        revision: head,
        reason: HOSTILE,
        since: "2026-01-01T00:00:00.000Z",
        until: "2026-01-02T00:00:00.000Z",
        by: HOSTILE,
      },
      jobs: { [`job${HOSTILE}`]: { message: HOSTILE, gauge: 1, at: "2026-01-01T00:00:00.000Z" } },
      lastRun: {
        revision: head,
        result: `failed${HOSTILE}`,
        dryRun: false,
        durationMs: 1,
        warnings: [],
        steps: [],
        finishedAt: "2026-01-01T00:00:00.000Z",
      },
    });
    hosts({ evil: json(evil), fine: json(status(head)) });
    for (const args of [["status"], ["wait", head, "--timeout", "1"]]) {
      const res = await fleet(...args);
      assert.equal(res.code, 1, res.stderr);
      const out = res.stdout;
      assert.ok(!drives(out), `${args[0]}: nothing that drives the terminal\n${out}`);
      assert.equal(
        lineOf(out, "fine").length,
        args[0] === "status" ? 1 : 0,
        `${args[0]}: no forged row\n${out}`,
      );
      assert.doesNotMatch(out, /^fine +0123456789ab/m, `${args[0]}: no forged row`);
    }
    const status1 = (await fleet("status")).stdout;
    assert.equal(lineOf(status1, "evil").length, 1);
    assert.ok((lineOf(status1, "evil")[0] ?? "").length < 2000, "each text is cut");
  });

  it("a reason of 1 MB is cut on the table, not printed whole", async () => {
    hosts({
      long: json(
        status(head, { suspended: { reason: "x".repeat(1 << 20), since: "2026-01-01T00:00:00.000Z" } }),
      ),
    });
    const res = await fleet("status");
    assert.equal(lineOf(res.stdout, "long").length, 1);
    assert.ok(res.stdout.length < 4000, `${res.stdout.length} characters printed`);
  });
});

describe("fleet against redirects", () => {
  it("a 3xx is that host's problem, never followed: the token goes to no other URL, a file: URL is never read", async () => {
    const tokenFile = path.join(fx.dir, "status-token");
    writeFileSync(tokenFile, "fleet-status-token-0123456789\n", { mode: 0o600 });
    const to =
      (location: string, code = 302): Handler =>
      (_req, res) =>
        res.writeHead(code, { location }).end();
    hosts({
      same: to(`${base}/collector/status`),
      keep: to(`${base}/collector/status`, 308),
      other: to(`http://localhost:${(server.address() as AddressInfo).port}/collector/status`, 307),
      file: to("file:///etc/passwd"),
    });
    for (const args of [["status"], ["wait", head, "--timeout", "1"]]) {
      const res = await fleet(...args, "--token-file", tokenFile);
      assert.equal(res.code, 1, res.stderr);
      assert.deepEqual(collected, [], `${args[0]}: no redirect followed`);
      assert.doesNotMatch(res.stdout + res.stderr, /fleet-status-token/);
    }
    const res = await fleet("status", "--token-file", tokenFile);
    for (const h of ["same", "keep", "other", "file"])
      assert.match(
        lineOf(res.stdout, h)[0] ?? "",
        / HTTP_REFUSED: .*\/status answered a redirect \(HTTP 30\d\), not followed/,
        h,
      );
  });
});

describe("fleet against the clone's own manifests", () => {
  it("a manifest that is not YAML, names no host, names another's host, or has no http(s) publicUrl is that host's row: never skipped, never INTERNAL", async () => {
    hosts({
      fine: json(status(head)),
      broken: { text: "host: [unclosed\n" },
      nameless: { text: stringify({ version: 1, publicUrl: `${base}/fine` }) },
      evil: { text: stringify({ version: 1, host: "a\nfine     up to date", publicUrl: `${base}/fine` }) },
      twin: { text: stringify({ version: 1, host: "fine", publicUrl: `${base}/fine` }) },
      nourl: {},
      file: { url: "file:///etc/passwd" },
    });
    const res = await fleet("status");
    assert.equal(res.code, 1, res.stderr);
    assert.equal(res.stderr, "");
    const row = (h: string) => lineOf(res.stdout, h).join("\n");
    assert.match(row("broken"), /^broken +CONFIG_INVALID: config\/broken\.yaml is not YAML: /);
    assert.match(row("nameless"), /^nameless CONFIG_INVALID: config\/nameless\.yaml names no host/);
    assert.match(row("evil"), /^evil +CONFIG_INVALID: config\/evil\.yaml names no host/);
    assert.match(row("nourl"), /^nourl +CONFIG_INVALID: no publicUrl in config\/nourl\.yaml$/);
    assert.match(
      row("file"),
      /^file +CONFIG_INVALID: config\/file\.yaml: publicUrl is not an http\(s\) URL$/,
    );
    assert.deepEqual(lineOf(res.stdout, "fine"), [
      "fine     CONFIG_INVALID: config/twin.yaml names host fine too: a host has one manifest",
      "fine     CONFIG_INVALID: config/fine.yaml names host fine too: a host has one manifest",
    ]);
    assert.match(res.stdout, /^hint: CONFIG_INVALID: fix the file in config\/: /m);
    const waited = await fleet("wait", head, "--timeout", "1");
    assert.equal(waited.code, 1, waited.stdout);
    assert.match(waited.stdout, /^ {2}broken: CONFIG_INVALID: config\/broken\.yaml is not YAML/m);
    assert.match(waited.stdout, /^hint: CONFIG_INVALID: /m);
    for (const h of ["broken", "nameless", "evil", "nourl", "file", "fine"])
      assert.match(waited.stdout, new RegExp(`^  ${h}: `, "m"), h);
  });

  it("a config directory of manifests that name no host is not a fleet that runs every revision", async () => {
    hosts({ nameless: { text: stringify({ version: 1 }) } });
    const waited = await fleet("wait", head, "--timeout", "1");
    assert.equal(waited.code, 1, waited.stdout);
    assert.doesNotMatch(waited.stdout, /^every host runs/m);
    const empty = await runCli(["fleet", "wait", "HEAD", "--timeout", "1", "--repo", fx.clone]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /^error USAGE: no host manifests in .*\nhint: /);
  });
});

describe("fleet wait against hosts that lie, go back or never answer", () => {
  it("a host is done only when it ran REV and reports every step its manifest at REV has applied", async () => {
    // The manifests at REV, committed: partial's and fine's name the step their hosts must report.
    const manifest = (host: string, steps: { name: string }[] = []) =>
      stringify({ version: 1, host, publicUrl: `${base}/${host}`, steps });
    const rev = fx.push(
      {
        "config/empty.yaml": manifest("empty"),
        "config/stale.yaml": manifest("stale"),
        "config/partial.yaml": manifest("partial", [{ name: "landing" }]),
        "config/fine.yaml": manifest("fine", [{ name: "landing" }]),
      },
      "manifests",
    );
    // Says nothing of its steps, and ran another revision.
    routes.set("empty", json(status(old, { steps: [] })));
    // Every step it names applied REV, while the host ran another revision.
    routes.set("stale", json(status(rev, { deployedRevision: old })));
    // Leaves out the step its manifest at REV has.
    routes.set("partial", json(status(rev, { steps: [] })));
    routes.set("fine", json(status(rev)));
    const res = await fleet("wait", rev, "--timeout", "1");
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stdout, /^ {2}empty: still at [0-9a-f]{12}/m);
    assert.match(res.stdout, /^ {2}stale: still at [0-9a-f]{12}/m);
    assert.match(
      res.stdout,
      /^ {2}partial: reports no step landing \(its manifest at [0-9a-f]{12} has it\)/m,
    );
    assert.doesNotMatch(res.stdout, /^ {2}fine: /m);
  });

  it("a host that went back to an older revision is waited for again", async () => {
    let flips = 0;
    let slows = 0;
    hosts({
      flip: (req, res) => json(flips++ === 0 ? status(head) : status(old))(req, res),
      slow: (req, res) => json(slows++ === 0 ? status(old) : status(head))(req, res),
    });
    const res = await fleet("wait", head, "--timeout", "2");
    assert.equal(res.code, 1, res.stdout);
    assert.ok(flips >= 2);
    assert.match(res.stdout, /^ {2}flip: still at [0-9a-f]{12}/m);
    assert.doesNotMatch(res.stdout, /^ {2}slow: /m);
  });

  it("a host that never answers ends the wait at --timeout, not an ask's 3 s later; one that gets there within it is done", async () => {
    const open: { at: number; closed?: number }[] = [];
    hosts({
      mute: (req) => {
        const c = { at: Date.now() } as { at: number; closed?: number };
        open.push(c);
        req.socket.on("close", () => {
          c.closed = Date.now();
        });
      },
    });
    const res = await fleet("wait", head, "--timeout", "1");
    const ended = Date.now();
    assert.equal(res.code, 1, res.stdout);
    assert.match(
      res.stdout,
      /not every host runs [0-9a-f]{12} after 1s:\n {2}mute: .*mute\/status unreachable: /,
    );
    assert.equal(open.length, 1);
    const first = open[0] ?? { at: 0 };
    assert.ok(
      first.closed !== undefined && first.closed - first.at < 2000,
      `asked for ${(first.closed ?? ended) - first.at} ms`,
    );

    // One that gets there 1.5 s into a wait of 4 s is done.
    rmSync(path.join(fx.pusher, "config", "mute.yaml"));
    let firstAsked = 0;
    hosts({
      late: (req, res) => {
        firstAsked ||= Date.now();
        json(status(Date.now() - firstAsked > 1500 ? head : old))(req, res);
      },
    });
    const late = await fleet("wait", head, "--timeout", "4");
    assert.equal(late.code, 0, late.stdout);
    assert.match(late.stdout, /^waiting for [0-9a-f]{12} \(\d+s\): late: still at [0-9a-f]{12}/m);
    assert.match(late.stdout, /^every host runs [0-9a-f]{12}$/m);
  });

  it("--timeout beyond a day, zero or not a number is a usage error", async () => {
    hosts({ fine: json(status(head)) });
    for (const t of ["0", "-1", "abc", "1e9", "Infinity"]) {
      const res = await fleet("wait", head, `--timeout=${t}`);
      assert.equal(res.code, 2, `${t}: ${res.stdout}`);
      assert.match(res.stderr, /--timeout takes a number of seconds from 1 to 86400/);
    }
  });
});
