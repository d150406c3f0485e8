import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, connect } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import {
  freePort,
  hostRoot,
  listeningUrl,
  runArgs,
  runCli,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/** What the agent says is what happened: the real CLI's output after real runs. */

let fx: Fixture;
let root: string;
let stateDir: string;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": `${"<p>line</p>\n".repeat(40)}` });
  root = path.join(fx.dir, "root");
  stateDir = path.join(fx.dir, "state");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
});
afterEach(() => fx.cleanup());

describe("a failed step, as the CLI says it", () => {
  it("its error and hint come first, its long diff after; the retry says the last attempt failed, not that it was cut off", async () => {
    const manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          reload: [["sh", "-c", "echo reload refused >&2; exit 3"]],
        },
      ],
    });
    const args = runArgs(manifest, fx.clone, root, stateDir);
    const first = await runCli(args);
    assert.equal(first.code, 1);
    const lines = first.stdout.split("\n");
    const failed = lines.findIndex((l) => l.startsWith("[FAILED] landing"));
    assert.ok(failed >= 0, first.stdout);
    assert.match(lines[failed + 1] ?? "", /^ {4}error COMMAND_FAILED: .*reload refused/);
    assert.match(lines[failed + 2] ?? "", /^ {4}hint: \S/);
    const diff = lines.findIndex((l) => /^ {4}write \/var\/www\/index\.html/.test(l));
    assert.ok(diff > failed + 2, "the diff comes after the error and its hint");

    const again = await runCli(args);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /the last attempt failed: its follow-up actions run again/);
    assert.doesNotMatch(again.stdout, /did not finish/);
  });
});

describe("fleet status tells what is live", () => {
  it("a host whose only step failed is NOT LIVE (step, error, the revision still live), never 'up to date'; each host's branch, fetched; the unreachable URL named", async () => {
    const SECRET = "truth-fleet-secret-0123456789";
    const hostRootDir = hostRoot(fx.dir, SECRET);
    const port = await freePort();
    const agentManifest = writeManifest(fx.dir, {
      listen: { host: "127.0.0.1", port },
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      steps: [
        {
          name: "page",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          validate: ["grep", "-q", "deploy-ok", "{file}"],
        },
      ],
    });
    const good = fx.push({ "landing/index.html": "<p>deploy-ok v1</p>\n" }, "good page");
    const args = runArgs(agentManifest, fx.clone, hostRootDir, stateDir);
    assert.equal((await runCli(args)).code, 0);
    const broken = fx.push({ "landing/index.html": "<p>broken</p>\n" }, "broken page");
    // The operator's clone: config/*.yaml name the hosts; lxc999 deploys branch "release" and is down.
    const downPort = await freePort();
    const config = path.join(fx.pusher, "config");
    mkdirSync(config, { recursive: true });
    writeFileSync(
      path.join(config, "lxctest.yaml"),
      stringify({ version: 1, host: "lxctest", publicUrl: `http://127.0.0.1:${port}` }),
    );
    writeFileSync(
      path.join(config, "lxc999.yaml"),
      stringify({
        version: 1,
        host: "lxc999",
        publicUrl: `http://127.0.0.1:${downPort}`,
        repo: { branch: "release" },
      }),
    );
    git(fx.pusher, "push", "--quiet", "origin", `${good}:refs/heads/release`);
    const daemon = startCli([
      ...serveArgs(agentManifest, fx.clone, hostRootDir, `127.0.0.1:${port}`),
      "--state-dir",
      stateDir,
    ]);
    try {
      await daemon.waitFor(/"msg":"run finished"/);
      // A commit the operator's clone has not fetched yet.
      const other = path.join(fx.dir, "other");
      git(fx.dir, "clone", "--quiet", fx.origin, other);
      writeFileSync(path.join(other, "README"), "newer\n");
      git(other, "add", "-A");
      git(other, "commit", "--quiet", "-m", "newer");
      git(other, "push", "--quiet", "origin", "main");
      const newest = git(other, "rev-parse", "HEAD");

      const res = await runCli(["fleet", "status", "--repo", fx.pusher]);
      assert.equal(res.code, 1, res.stdout + res.stderr);
      assert.doesNotMatch(res.stdout, /^lxctest .*up to date/m);
      assert.match(
        res.stdout,
        new RegExp(
          `^lxctest +${broken.slice(0, 12)} “broken page”; NOT LIVE: page still at ${good.slice(0, 12)} \\(COMMAND_FAILED: .*\\)`,
          "m",
        ),
      );
      assert.match(
        res.stdout,
        new RegExp(`^lxc999 +HTTP_UNAVAILABLE: http://127\\.0\\.0\\.1:${downPort}/status unreachable: `, "m"),
      );
      assert.match(res.stdout, new RegExp(`^fleet: origin/main at ${newest.slice(0, 12)}$`, "m"));
      assert.match(res.stdout, new RegExp(`^fleet: origin/release at ${good.slice(0, 12)}$`, "m"));
      const json = JSON.parse((await runCli(["fleet", "status", "--json", "--repo", fx.pusher])).stdout) as {
        hosts: {
          host: string;
          tip: string;
          behind: number;
          upToDate: boolean;
          lagging: { step: string; live: string };
        }[];
      };
      const h = json.hosts.find((x) => x.host === "lxctest");
      assert.equal(h?.tip, newest, "counted against the fetched tip, not the clone's stale ref");
      assert.equal(h?.behind, 1);
      assert.equal(h?.upToDate, false);
      assert.deepEqual({ step: h?.lagging.step, live: h?.lagging.live }, { step: "page", live: good });
      // fleet wait shows progress while it waits, and names the laggard when it gives up.
      const wait = await runCli(["fleet", "wait", newest, "--timeout", "2", "--repo", fx.pusher]);
      assert.equal(wait.code, 1);
      assert.match(wait.stdout, /^waiting for [0-9a-f]{12} \(\d+s\): .*lxctest: still at /m);
      assert.match(wait.stdout, /not every host runs/);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });
});

describe("drift follows the truth", () => {
  it("a deploy that re-applies a drifted step clears its drift in /status and the metric at once, as diff says", async () => {
    const SECRET = "truth-drift-secret-0123456789";
    const hostRootDir = hostRoot(fx.dir, SECRET);
    const manifest = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 600 },
      steps: [
        { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
      ],
    });
    assert.equal((await runCli(runArgs(manifest, fx.clone, hostRootDir, stateDir))).code, 0);
    writeFileSync(path.join(hostRootDir, "var/www/index.html"), "<p>edited by hand</p>\n");
    const daemon = startCli([...serveArgs(manifest, fx.clone, hostRootDir), "--state-dir", stateDir]);
    try {
      const url = await listeningUrl(daemon);
      await daemon.waitFor(/"msg":"what is live drifted from git"/);
      type Status = {
        drift: { steps: { name: string; state: string }[] };
        runner: { running: { task: string } | null; waiting: unknown[] };
        queue: { runsStarted: number; running: boolean; pending: boolean };
      };
      const status = async () => (await (await fetch(`${url}/status`)).json()) as Status;
      const gauge = async () =>
        /^deploy_agent_drift\{step="landing",host="lxctest"\} (\d)$/m.exec(
          await (await fetch(`${url}/metrics`)).text(),
        )?.[1];
      assert.equal((await status()).drift.steps.find((s) => s.name === "landing")?.state, "drifted");
      assert.equal(await gauge(), "1");
      const before = (await status()).queue.runsStarted;
      const rev = fx.push({ "landing/index.html": "<p>fixed in git</p>\n" });
      const body = pushBody({ after: rev });
      const res = await fetch(`${url}/hooks/deploy`, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      });
      assert.equal(res.status, 202);
      for (let i = 0; ; i++) {
        const s = await status();
        if (s.queue.runsStarted > before && !s.queue.running && !s.queue.pending) break;
        assert.ok(i < 200, "the push's run finished");
        await sleep(50);
      }
      // No drift check ran since (the next is 600 s away): the run itself is the evidence.
      assert.equal((await status()).drift.steps.find((s) => s.name === "landing")?.state, "in-sync");
      assert.equal(await gauge(), "0");
      const diff = await runCli([
        "diff",
        "--config",
        manifest,
        "--repo",
        fx.clone,
        "--root",
        hostRootDir,
        "--state-dir",
        stateDir,
      ]);
      assert.equal(diff.code, 0, diff.stdout);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });
});

describe("every delivery leaves one line", () => {
  it("accepted, duplicate, other branch, tag, other event, bad signature, bad body, unknown path, too large: one line each with its outcome, and a count", async () => {
    const SECRET = "truth-deliveries-secret-0123456789";
    const hostRootDir = hostRoot(fx.dir, SECRET);
    const manifest = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0, bodyLimitBytes: 65536 },
      drift: { intervalSeconds: 0 },
      steps: [
        { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
      ],
    });
    const daemon = startCli([...serveArgs(manifest, fx.clone, hostRootDir), "--state-dir", stateDir]);
    try {
      const url = await listeningUrl(daemon);
      const rev = git(fx.pusher, "rev-parse", "HEAD");
      const post = async (body: Buffer, headers: Record<string, string>, at = "/hooks/deploy") =>
        (await fetch(`${url}${at}`, { method: "POST", headers, body: new Uint8Array(body) })).status;
      const signed = (body: Buffer, event = "push", id = randomUUID()) =>
        giteaHeaders(body, SECRET, event, id);
      const push = pushBody({ after: rev });
      const id = randomUUID();
      const sent: [string, number][] = [
        ["accepted", await post(push, signed(push, "push", id))],
        ["duplicate", await post(push, signed(push, "push", id))],
        [
          "ignored_branch",
          await post(
            pushBody({ after: rev, ref: "refs/heads/dev" }),
            signed(pushBody({ after: rev, ref: "refs/heads/dev" })),
          ),
        ],
        [
          "ignored_branch",
          await post(
            pushBody({ after: rev, ref: "refs/tags/v1" }),
            signed(pushBody({ after: rev, ref: "refs/tags/v1" })),
          ),
        ],
        ["ignored_event", await post(push, signed(push, "issues"))],
        ["bad_signature", await post(push, giteaHeaders(push, "not-the-secret-0123456789"))],
        ["bad_body", await post(Buffer.from("not json"), signed(Buffer.from("not json")))],
        ["unknown_path", await post(push, signed(push), `/hooks/${"x".repeat(2000)}`)],
        ["too_large", await post(Buffer.alloc(70_000, 0x20), signed(Buffer.alloc(70_000, 0x20)))],
      ];
      assert.deepEqual(
        sent.map(([, status]) => status),
        [202, 202, 202, 202, 202, 401, 400, 404, 413],
      );
      // A signed body replayed with a huge event header (headers are not signed), and a POST abandoned
      // mid-body: each one line too, bounded.
      assert.equal(await post(push, { ...signed(push), "x-gitea-event": "e".repeat(10_000) }), 202);
      sent.push(["ignored_event", 202]);
      const { port } = new URL(url);
      const gone = connect(Number(port), "127.0.0.1");
      gone.on("error", () => {});
      gone.write(
        "POST /hooks/deploy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
      );
      await sleep(200);
      gone.destroy();
      sent.push(["aborted", 0]);
      await sleep(300);
      const lines = daemon
        .out()
        .split("\n")
        .filter((l) => l.includes('"msg":"delivery"'))
        .map((l) => JSON.parse(l) as { outcome: string; delivery?: string; path?: string; reason?: string });
      assert.deepEqual(
        lines.map((l) => l.outcome),
        sent.map(([outcome]) => outcome),
        "exactly one line per delivery, in order",
      );
      assert.equal(lines[0]?.delivery, id);
      const huge = lines[9] as { event?: string; reason?: string };
      assert.ok(
        (huge.event?.length ?? 0) <= 256 && (huge.reason?.length ?? 0) <= 300,
        "unsigned headers logged bounded",
      );
      assert.ok(
        lines.every((l) => l.reason),
        "each says why",
      );
      const unknown = lines[7];
      assert.ok(unknown?.path && unknown.path.length <= 66, `path logged bounded: ${unknown?.path?.length}`);
      const metrics = await (await fetch(`${url}/metrics`)).text();
      // Those whose signature held say which secret signed them.
      for (const [outcome, n, secret] of [
        ["accepted", 1, "current"],
        ["duplicate", 1, "current"],
        ["ignored_branch", 2, "current"],
        ["ignored_event", 2, "current"],
        ["bad_signature", 1, null],
        ["bad_body", 1, "current"],
        ["unknown_path", 1, null],
        ["too_large", 1, null],
        ["aborted", 1, null],
      ] as const) {
        assert.match(
          metrics,
          new RegExp(
            `^deploy_agent_webhook_deliveries_total\\{outcome="${outcome}",${secret ? `secret="${secret}",` : ""}host="lxctest"\\} ${n}$`,
            "m",
          ),
        );
      }
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });
});

describe("fleet status against a hostile agent", () => {
  it("a /status that lies (options as revisions), is huge, or carries escape sequences is named, never trusted", async () => {
    const clobbered = path.join(fx.dir, "clobbered");
    const valid = {
      deployedRevision: git(fx.pusher, "rev-parse", "HEAD"),
      suspended: { reason: "\u001b]0;owned\u0007\u001b[2Jmigration", since: "2026-01-01T00:00:00Z" },
      lastError: null,
      health: { ok: true },
      lastRun: null,
      steps: [],
    };
    const answers: Record<string, string> = {
      "/liar/status": JSON.stringify({ ...valid, deployedRevision: `--output=${clobbered}` }),
      "/huge/status": JSON.stringify({ ...valid, padding: "x".repeat(5 * 1024 * 1024) }),
      "/escapes/status": JSON.stringify(valid),
    };
    const server = createHttpServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" }).end(answers[req.url ?? ""] ?? "{}");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const config = path.join(fx.pusher, "config");
    mkdirSync(config, { recursive: true });
    for (const name of ["liar", "huge", "escapes"])
      writeFileSync(
        path.join(config, `${name}.yaml`),
        stringify({ version: 1, host: name, publicUrl: `${base}/${name}` }),
      );
    try {
      const res = await runCli(["fleet", "status", "--repo", fx.pusher]);
      assert.equal(res.code, 1);
      assert.match(
        res.stdout,
        /^liar +HTTP_REFUSED: http:\/\/127\.0\.0\.1:\d+\/liar\/status answered something that is not an agent's status: deployedRevision: not a commit id$/m,
      );
      assert.match(
        res.stdout,
        /^huge +HTTP_REFUSED: http:\/\/127\.0\.0\.1:\d+\/huge\/status answered more than 4194304 bytes$/m,
      );
      assert.match(res.stdout, /^escapes .*SUSPENDED since .*: \?\]0;owned\?\?\[2Jmigration/m);
      assert.equal(res.stdout.includes("\u001b"), false, "no escape character reaches the terminal");
      assert.equal(existsSync(clobbered), false, "no file written by an option from a host");
    } finally {
      server.close();
    }
  });
});
