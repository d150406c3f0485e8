import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { parseManifest } from "../src/manifest/load.js";
import { acquireLock, FLOCK_FILE, LOCK_FILE } from "../src/state/lock.js";
import { hostRoot, PROJECT, runArgs, runCli, serveArgs, startCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { needs } from "./helpers/needs.js";

/**
 * The deploy lock against another local user and other processes, all real: `nobody` (uid 65534, through
 * setpriv) squats whatever it can reach, and the real `deploy-agent run` and `serve` must still get the lock,
 * or refuse an unsafe state directory before they do anything. Acting as another user needs root; CI runs
 * as root and fails here rather than skip.
 */

const NOBODY = 65534;
const SECRET = "attack-lock-Secret-xyz";
const CHILD = path.join(PROJECT, "test/helpers/lock-child.ts");

function unavailable(): string | false {
  if (process.getuid?.() !== 0) {
    const reason = "the lock's hostile tests act as another user (nobody) and need root";
    if (process.env.CI) throw new Error(`${reason}: CI runs every suite`);
    return reason;
  }
  return (
    needs("setpriv", ["--version"], "util-linux, Essential in Debian") ||
    needs("strace", ["-V"], "apt-get install strace; .ci/run does")
  );
}

const asNobody = (argv: string[]) => [
  `--reuid=${NOBODY}`,
  `--regid=${NOBODY}`,
  "--clear-groups",
  "--",
  ...argv,
];

/** Runs argv as nobody; its exit status and stderr. */
function nobody(argv: string[], cwd = "/"): { status: number | null; stderr: string } {
  const r = spawnSync("setpriv", asNobody(argv), { cwd, encoding: "utf8" });
  return { status: r.status, stderr: r.stderr };
}

const started: ChildProcess[] = [];
afterEach(() => {
  // The whole group: flock's child (the shell, then sleep) would outlive flock, holding this test's pipes
  // open, and keep this file's process running until its sleep ends.
  for (const p of started.splice(0)) {
    try {
      process.kill(-(p.pid ?? 0), "SIGKILL");
    } catch {}
  }
});

/** A long-lived process (as nobody when asked) that prints a line once it holds what it took. */
function holding(argv: string[], asUser: boolean): Promise<ChildProcess> {
  const [cmd = "", ...args] = asUser ? ["setpriv", ...asNobody(argv)] : argv;
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  started.push(p);
  let err = "";
  p.stderr?.on("data", (d) => {
    err += d;
  });
  return new Promise((resolve, reject) => {
    p.stdout?.once("data", () => resolve(p));
    p.once("exit", (code) => reject(new Error(`${argv.join(" ")} exited ${code} before holding: ${err}`)));
  });
}

/** The abstract socket name (less its leading NUL) the lock had before it became a file: anyone could bind it. */
const oldSocketName = (stateDir: string) =>
  `deploy-agent-lock-${createHash("sha256").update(stateDir).digest("hex").slice(0, 40)}`;
const SQUAT_SOCKET = `require("net").createServer().listen({ path: "\\0" + process.argv[1], exclusive: true }, () => console.log("bound"))`;

function landingManifest(fx: Fixture, extra: Record<string, unknown> = {}) {
  return writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
    ...extra,
  });
}

describe("deploy lock against another local user", { skip: unavailable() }, () => {
  let fx: Fixture;
  before(() => {
    fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  });
  after(() => fx.cleanup());

  it("nobody squats the old socket name and tries every way into the lock file: run and serve still deploy", async () => {
    // The fixture directory as /var/lib is: others may look in, not write.
    chmodSync(fx.dir, 0o755);
    const root = hostRoot(fx.dir, SECRET);
    const stateDir = path.join(realpathSync(fx.dir), "state");
    const manifest = landingManifest(fx);
    await holding([process.execPath, "-e", SQUAT_SOCKET, oldSocketName(stateDir)], true);
    assert.notEqual(nobody(["mkdir", stateDir]).status, 0, "nobody cannot make the state directory");

    const first = await runCli(runArgs(manifest, fx.clone, root, stateDir));
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>v1</p>\n");

    const lockFile = path.join(stateDir, FLOCK_FILE);
    assert.ok(existsSync(lockFile));
    for (const argv of [
      ["flock", "-n", lockFile, "true"],
      ["flock", "-n", "-s", lockFile, "true"],
      ["flock", "-n", stateDir, "true"],
      ["touch", lockFile],
      ["ln", "-sfn", "/tmp", lockFile],
      ["mv", stateDir, `${stateDir}.moved`],
      ["cat", path.join(stateDir, LOCK_FILE)],
    ]) {
      const r = nobody(argv);
      assert.notEqual(r.status, 0, `nobody: ${argv.join(" ")}`);
      assert.match(r.stderr, /Permission denied/, argv.join(" "));
    }

    const v2 = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const daemon = startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", stateDir]);
    try {
      const line = await daemon.waitFor(/.*"msg":"run finished".*/);
      assert.match(line, /"result":"succeeded"/);
      assert.match(line, new RegExp(v2));
      assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>v2</p>\n");
      assert.doesNotMatch(daemon.out(), /LOCKED/);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });

  it("a state directory nobody made first is refused before anything is done", async () => {
    const root = hostRoot(fx.dir, SECRET);
    const manifest = landingManifest(fx);
    rmSync(path.join(root, "var/www/index.html"), { force: true });
    // A shared directory as /tmp is: anyone may create in it, the sticky bit keeps others' entries.
    const shared = mkdtempSync(path.join(tmpdir(), "deploy-agent-shared-"));
    chmodSync(shared, 0o1777);
    try {
      const squat = nobody(
        [
          "sh",
          "-c",
          `umask 0 && mkdir state theirs && ln -s /etc/passwd state/${FLOCK_FILE} && echo '{"pid":1,"since":"forever"}' > state/${LOCK_FILE}`,
        ],
        shared,
      );
      assert.equal(squat.status, 0, squat.stderr);

      const stateDir = path.join(shared, "state");
      const r = await runCli(runArgs(manifest, fx.clone, root, stateDir));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /error STATE_UNSAFE: state directory .*\/state is owned by uid 65534/);
      assert.match(
        r.stderr,
        /\nhint: a state directory must be the agent's alone: .* then chown \d+ \S+\/state and chmod 0700 /,
      );
      assert.doesNotMatch(r.stdout + r.stderr, /LOCKED/);
      assert.equal(existsSync(path.join(root, "var/www/index.html")), false, "nothing deployed");
      assert.equal(existsSync(path.join(stateDir, "state.json")), false, "no state written");
      assert.equal(readlinkSync(path.join(stateDir, FLOCK_FILE)), "/etc/passwd");
      assert.equal(readFileSync(path.join(stateDir, LOCK_FILE), "utf8"), '{"pid":1,"since":"forever"}\n');

      // A directory of theirs above a state directory that does not exist yet: not even created.
      const under = path.join(shared, "theirs", "state");
      const r2 = await runCli(runArgs(manifest, fx.clone, root, under));
      assert.equal(r2.code, 1, r2.stdout + r2.stderr);
      assert.match(r2.stderr, /error STATE_UNSAFE: .*\/theirs is owned by uid 65534/);
      assert.equal(existsSync(under), false, "the state directory was not created");
      assert.equal(existsSync(path.join(root, "var/www/index.html")), false, "nothing deployed");
    } finally {
      rmSync(shared, { recursive: true, force: true });
    }
  });

  describe("what nobody could reach is refused, not waited on", () => {
    const base = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-other-"));
    after(() => rmSync(base, { recursive: true, force: true }));
    chmodSync(base, 0o1777);
    let n = 0;
    const refused = (pattern: RegExp) => (e: AgentError) => {
      assert.equal(e.code, "STATE_UNSAFE", e.message);
      assert.match(e.message, pattern);
      assert.ok(e.hint);
      return true;
    };
    /** A state directory of root's in base, with the mode given. */
    const stateDir = (mode: number) => {
      const dir = path.join(base, `state-${++n}`);
      mkdirSync(dir, { mode });
      chmodSync(dir, mode);
      return dir;
    };

    it("a lock file others may open, which nobody holds: refused at once, not LOCKED", async () => {
      const dir = stateDir(0o755);
      const file = path.join(dir, FLOCK_FILE);
      writeFileSync(file, "");
      chmodSync(file, 0o644);
      await holding(["flock", "-n", "-s", file, "sh", "-c", "echo held; exec sleep 600"], true);
      const t0 = Date.now();
      await assert.rejects(acquireLock(dir, 5000), refused(/can be opened by group or others/));
      assert.ok(Date.now() - t0 < 2000, "did not wait");
    });

    it("a state directory others may write, where nobody planted and holds the lock file", async () => {
      const dir = stateDir(0o777);
      const file = path.join(dir, FLOCK_FILE);
      await holding(["flock", "-n", file, "sh", "-c", "echo held; exec sleep 600"], true);
      await assert.rejects(acquireLock(dir, 5000), refused(/can be written by group or others/));
    });

    it("a lock file of nobody's (restored with the wrong owner)", async () => {
      const dir = stateDir(0o700);
      const file = path.join(dir, FLOCK_FILE);
      writeFileSync(file, "", { mode: 0o600 });
      chownSync(file, NOBODY, NOBODY);
      await assert.rejects(acquireLock(dir), refused(/is owned by uid 65534/));
    });

    it("a lock file that is a symlink to a file of nobody's", async () => {
      const dir = stateDir(0o700);
      const theirs = path.join(base, `theirs-${n}`);
      assert.equal(nobody(["sh", "-c", `echo mine > ${theirs}`]).status, 0);
      symlinkSync(theirs, path.join(dir, FLOCK_FILE));
      await assert.rejects(acquireLock(dir), refused(/is a symlink/));
      assert.equal(readFileSync(theirs, "utf8"), "mine\n");
    });

    it("a state directory reached through nobody's symlink", async () => {
      const dir = stateDir(0o700);
      const link = path.join(base, `link-${n}`);
      assert.equal(nobody(["ln", "-s", dir, link]).status, 0);
      await assert.rejects(acquireLock(link), refused(/symlink .* is owned by uid 65534/));
    });
  });

  it("release order: the holder record is removed while the lock is still held, then the lock", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-order-"));
    try {
      const trace = path.join(dir, "trace");
      execFileSync("strace", [
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=close,unlink,unlinkat",
        "-o",
        trace,
        process.execPath,
        "--import",
        "tsx",
        CHILD,
        path.join(dir, "state"),
        "0",
      ]);
      const lines = readFileSync(trace, "utf8").split("\n");
      const removed = lines.findIndex((l) => /unlink(at)?\(.*"[^"]*\/state\/deploy\.lock"/.test(l));
      const released = lines.findIndex((l) => new RegExp(`close\\(\\d+<[^>]*/state/${FLOCK_FILE}>`).test(l));
      assert.ok(removed >= 0, "the holder record was removed");
      assert.ok(released >= 0, "the lock file's descriptor was closed");
      assert.ok(removed < released, `${lines[removed]} before ${lines[released]}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** What a lock held beyond the bound looks like from outside: /healthz, /status, /metrics and a notice. */
describe("deploy lock held beyond webhook.lockWaitSeconds, seen from outside", () => {
  let fx: Fixture;
  let hook: Server;
  const notices: Record<string, unknown>[] = [];
  before(async () => {
    fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
    hook = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => {
        body += d;
      });
      req.on("end", () => {
        notices.push(JSON.parse(body));
        res.end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
  });
  after(() => {
    hook.close();
    fx.cleanup();
  });

  it("webhook.lockWaitSeconds: 60 by default, 0 to 3600 accepted, outside refused", async () => {
    const step = {
      name: "landing",
      kind: "file",
      source: "landing/index.html",
      targets: ["/var/www/index.html"],
    };
    const parse = (webhook: Record<string, unknown>) =>
      parseManifest(
        JSON.stringify({ version: 1, host: "lxctest", listen: { port: 9000 }, webhook, steps: [step] }),
        "m.yaml",
        { processEnv: {} },
      );
    assert.equal((await parse({})).manifest.webhook.lockWaitSeconds, 60);
    for (const ok of [0, 3600])
      assert.equal((await parse({ lockWaitSeconds: ok })).manifest.webhook.lockWaitSeconds, ok);
    for (const bad of [-1, 3601, 1.5, "60"])
      await assert.rejects(
        parse({ lockWaitSeconds: bad }),
        (e: AgentError) => e.code === "CONFIG_INVALID" && /webhook\.lockWaitSeconds/.test(e.message),
      );
  });

  it("/healthz 503 names the holder, /status and the metric say so, a run.error notice is sent; all clear after", async () => {
    const root = hostRoot(fx.dir, SECRET);
    const stateDir = path.join(fx.dir, "state");
    const port = (hook.address() as AddressInfo).port;
    const manifest = landingManifest(fx, {
      webhook: { pollIntervalSeconds: 0, lockWaitSeconds: 1 },
      notify: { targets: [{ kind: "webhook", url: `http://127.0.0.1:${port}/notice` }] },
    });
    const holder = await holding([process.execPath, "--import", "tsx", CHILD, stateDir, "hold"], false);
    const daemon = startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", stateDir]);
    try {
      const address = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(
        await daemon.waitFor(/.*"msg":"listening".*/),
      )?.[1];
      // The run waits out the bound (1 s), then gives up.
      const at = (line: string) => Date.parse(/"time":"([^"]+)"/.exec(line)?.[1] ?? "");
      const waiting = await daemon.waitFor(/.*"msg":"waiting for the deploy lock.*/);
      const failed = await daemon.waitFor(/.*"msg":"deploy run failed before its steps".*/);
      assert.match(failed, /"code":"LOCKED"/);
      const waited = at(failed) - at(waiting);
      assert.ok(waited >= 950 && waited < 5000, `waited ${waited} ms`);

      const health = await fetch(`${address}/healthz`);
      assert.equal(health.status, 503);
      const h = (await health.json()) as { status: string; reason: string };
      assert.equal(h.status, "unhealthy");
      assert.match(h.reason, new RegExp(`deploy lock .*1 s.*pid ${holder.pid}, since \\d{4}-`));

      const status = (await (await fetch(`${address}/status`)).json()) as {
        lastError: { code: string; message: string } | null;
        health: { ok: boolean; reason: string };
      };
      assert.equal(status.lastError?.code, "LOCKED");
      assert.match(status.lastError?.message ?? "", new RegExp(`pid ${holder.pid}`));
      assert.equal(status.health.ok, false);

      const metrics = await (await fetch(`${address}/metrics`)).text();
      assert.match(metrics, /^deploy_agent_lock_blocked\{host="lxctest"\} 1$/m);

      for (let i = 0; i < 100 && !notices.length; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(notices.length, 1, JSON.stringify(notices));
      const notice = notices[0] as { event: string; error: { code: string; message: string } };
      assert.equal(notice.event, "run.error");
      assert.equal(notice.error.code, "LOCKED");
      assert.match(notice.error.message, new RegExp(`pid ${holder.pid}`));

      // The holder goes; the next push gets the lock and the daemon is healthy again.
      holder.kill("SIGKILL");
      const rev = fx.push({ "landing/index.html": "<p>v2</p>\n" });
      const body = pushBody({ after: rev });
      const res = await fetch(`${address}/hooks/deploy`, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      });
      assert.equal(res.status, 202);
      await daemon.waitFor(/"msg":"run finished"/);
      // The line is logged as the run ends; its outcome reaches /healthz a moment later (the history write).
      let healthz = (await fetch(`${address}/healthz`)).status;
      for (let i = 0; i < 50 && healthz !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        healthz = (await fetch(`${address}/healthz`)).status;
      }
      assert.equal(healthz, 200);
      assert.match(
        await (await fetch(`${address}/metrics`)).text(),
        /^deploy_agent_lock_blocked\{host="lxctest"\} 0$/m,
      );
      assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>v2</p>\n");
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });
});
