import assert from "node:assert/strict";
import { ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError } from "../src/core/errors.js";
import { createLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { checkTransforms, SPARE_WAIT_MS, warmChecks } from "../src/hookshot/checks.js";
import { loadManifest } from "../src/manifest/load.js";
import { createAgent } from "../src/server/agent.js";
import { buildServer } from "../src/server/app.js";
import { PUSHED_FILES_MAX } from "../src/server/webhook-route.js";
import { stepSchema, warmSteps } from "../src/steps/index.js";
import { writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/**
 * A push that says it changed a hookshot transform starts the transform check's child while the run fetches
 * (warmChecks): the check then takes that child instead of starting one. Each child is seen through node's
 * own spawn, so the tests count processes, not calls.
 */

interface Seen {
  pid: number;
  /** The environment node hands to execve, as given to ChildProcess#spawn. */
  env: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const children: Seen[] = [];
type Spawn = (this: ChildProcess, options: { args: string[]; envPairs?: string[] }) => unknown;
const proto = ChildProcess.prototype as unknown as { spawn: Spawn };
const original = proto.spawn;
before(() => {
  proto.spawn = function (this: ChildProcess, options) {
    const res = original.call(this, options);
    if (options.args.some((a) => /sandbox\.(ts|js)$/.test(a)) && this.pid !== undefined) {
      const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        this.once("exit", (code, signal) => resolve({ code, signal })),
      );
      children.push({ pid: this.pid, env: [...(options.envPairs ?? [])], exit });
    }
    return res;
  };
});
after(() => {
  proto.spawn = original;
});

const good = { src: 'result = { version: "v2", plain: "hi " + data.who };', payloads: ['{"who":"ana"}'] };
const hi = [{ problem: null, runs: [{ output: { content: { plain: "hi ana" } } }] }];
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

let stop: AbortController;
afterEach(async () => {
  // No test leaves a child waiting for the next one.
  stop.abort();
  await Promise.all(children.map((c) => c.exit));
  children.length = 0;
});

describe("the transform check's child, started ahead", () => {
  it("is taken by the next check: one child for both, started before the check", async () => {
    stop = new AbortController();
    warmChecks(stop.signal);
    assert.equal(children.length, 1, "the child starts at once");
    warmChecks(stop.signal);
    assert.equal(children.length, 1, "at most one child waits");
    await sleep(300); // it loads meanwhile
    assert.deepEqual(await checkTransforms([good]), hi);
    assert.equal(children.length, 1, "the check started no child of its own");
    assert.deepEqual(await children[0]?.exit, { code: 0, signal: null });
    // The next check has none waiting: it starts its own, as before.
    assert.deepEqual(await checkTransforms([good]), hi);
    assert.equal(children.length, 2);
  });

  it("gets none of the daemon's environment but its NODE_OPTIONS: no secret reaches the child", async (t) => {
    const saved = { ...process.env };
    t.after(() => {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    });
    process.env.WEBHOOK_SECRET = "whsec-must-not-reach-the-child";
    process.env.MATRIX_TOKEN = "syt_must_not_reach_the_child";
    process.env.NODE_OPTIONS = "--max-old-space-size=160";
    stop = new AbortController();
    warmChecks(stop.signal);
    // What execve got (node's own list), not /proc/PID/environ: a child under load may have exited by then.
    assert.deepEqual(children[0]?.env, ["NODE_OPTIONS=--max-old-space-size=160"]);
    assert.deepEqual(await checkTransforms([good]), hi, "and it still checks");
  });

  it(`is given an empty batch and exits when no check takes it within its wait (${SPARE_WAIT_MS} ms)`, async () => {
    stop = new AbortController();
    warmChecks(stop.signal, 400);
    assert.equal(children.length, 1);
    assert.deepEqual(await children[0]?.exit, { code: 0, signal: null }, "exits 0 on its own after the wait");
    assert.deepEqual(await checkTransforms([good]), hi);
    assert.equal(children.length, 2, "an expired child is never offered");
  });

  it("ends with the daemon: the stop signal kills a child nobody took, and none starts after it", async () => {
    stop = new AbortController();
    warmChecks(stop.signal);
    const [waiting] = children;
    assert.ok(waiting && alive(waiting.pid));
    stop.abort();
    assert.equal((await waiting.exit).signal, "SIGTERM");
    warmChecks(stop.signal);
    assert.equal(children.length, 1, "a stopped daemon starts none");
  });

  it("once taken, belongs to the run: the run's signal cancels it, the daemon's no longer does", async () => {
    stop = new AbortController();
    warmChecks(stop.signal);
    const run = new AbortController();
    const spins = { src: "while (true) {}", payloads: ["{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}"] };
    const check = checkTransforms([spins], { signal: run.signal }).catch((e: unknown) => e);
    await sleep(200);
    stop.abort(); // the daemon's signal: the taken child keeps running
    await sleep(100);
    assert.ok(alive(children[0]?.pid ?? 0), "still checking");
    run.abort();
    const err = await check;
    assert.ok(err instanceof AgentError && err.code === "ABORTED", String(err));
    assert.equal(children.length, 1);
  });

  it("is not taken by a check with bounds of its own (a timeout, an answer size)", async () => {
    stop = new AbortController();
    warmChecks(stop.signal);
    const err = await checkTransforms([good], { timeoutMs: 1 }).catch((e: unknown) => e);
    assert.ok(err instanceof AgentError && err.code === "TRANSFORM_CHECK_FAILED", String(err));
    assert.equal(children.length, 2, "a child of its own, bounded as asked");
    assert.ok(alive(children[0]?.pid ?? 0), "the waiting one still waits");
  });

  it("a child that died waiting is not offered: the check starts its own", async () => {
    stop = new AbortController();
    warmChecks(stop.signal);
    process.kill(children[0]?.pid ?? 0, "SIGKILL");
    await children[0]?.exit;
    await sleep(50);
    assert.deepEqual(await checkTransforms([good]), hi);
    assert.equal(children.length, 2);
  });
});

describe("steps started ahead from what a push says it changed", () => {
  const hookshot = stepSchema.parse({
    name: "hookshot-transforms",
    kind: "hookshot",
    directory: "hookshot",
    prelude: "hookshot/lib/prelude.js",
    homeserver: "http://127.0.0.1:9",
    room: "!room:example.org",
    token: "syt_test",
    transforms: { "grafana.js": null },
  });
  const landing = stepSchema.parse({
    name: "landing",
    kind: "file",
    source: "landing/index.html",
    targets: ["/var/www/index.html"],
  });

  it("a transform or the prelude in the push starts the check's child; other files, none, or a stopped daemon do not", () => {
    stop = new AbortController();
    for (const files of [[], ["landing/index.html"], ["hookshot/README.md"], ["cinny/config.json"]]) {
      warmSteps([hookshot, landing], files, stop.signal);
      assert.equal(children.length, 0, JSON.stringify(files));
    }
    const stopped = new AbortController();
    stopped.abort();
    warmSteps([hookshot, landing], ["hookshot/grafana.js"], stopped.signal);
    assert.equal(children.length, 0, "stopped");
    warmSteps([hookshot, landing], ["landing/index.html", "hookshot/lib/prelude.js"], stop.signal);
    assert.equal(children.length, 1, "the prelude");
  });
});

describe("a delivery's commits", () => {
  let fx: Fixture;
  let url: string;
  let close: () => Promise<void>;
  const SECRET = "whsec-warm-checks-secret-value";

  before(() => {
    fx = makeFixture({ "hookshot/grafana.js": "result = 1;\n", "landing/index.html": "<p>hi</p>\n" });
  });
  /** A daemon (its agent and server) for one test; the test closes it. */
  const open = async () => {
    const manifestFile = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      steps: [
        {
          name: "hookshot-transforms",
          kind: "hookshot",
          directory: "hookshot",
          homeserver: "http://127.0.0.1:9",
          room: "!room:example.org",
          token: "syt_test",
          transforms: { "grafana.js": null },
        },
      ],
    });
    const { manifest } = await loadManifest(manifestFile, { processEnv: {} });
    const root = path.join(fx.dir, "root");
    mkdirSync(root, { recursive: true });
    const log = createLogger({ level: "silent", fd: 1 });
    // No clone there: each delivery's run fails before its steps, so every child seen is one started ahead.
    const repoDir = path.join(fx.dir, "no-clone");
    const agent = createAgent({
      manifest,
      repoDir,
      stateDir: path.join(fx.dir, "state"),
      root,
      log,
      dryRun: false,
    });
    const app = buildServer({ manifest, secret: new Secret(SECRET), agent, log });
    url = `${await app.listen({ host: "127.0.0.1", port: 0 })}/hooks/deploy`;
    close = async () => {
      await app.close();
      await agent.close();
    };
  };
  after(() => fx.cleanup());

  const deliver = async (commits: unknown, ref = "refs/heads/main") => {
    const body = JSON.parse(pushBody({ after: "a".repeat(40), ref }).toString("utf8")) as Record<
      string,
      unknown
    >;
    body.commits = commits;
    const raw = Buffer.from(JSON.stringify(body));
    const res = await fetch(url, {
      method: "POST",
      headers: giteaHeaders(raw, SECRET),
      body: new Uint8Array(raw),
    });
    return res.status;
  };

  it("start the check's child when they list a transform, and only then; any shape of commits is answered as before", async () => {
    stop = new AbortController();
    await open();
    const hostile = [
      null,
      "hookshot/grafana.js",
      [{ modified: "hookshot/grafana.js" }],
      [{ modified: [42, { path: "hookshot/grafana.js" }] }],
      [{ added: ["landing/index.html"], removed: [], modified: ["README.md"] }],
    ];
    for (const commits of hostile) {
      assert.equal(await deliver(commits), 202, JSON.stringify(commits));
      assert.equal(children.length, 0, JSON.stringify(commits));
    }
    assert.equal(await deliver([{ modified: ["hookshot/grafana.js"] }], "refs/heads/other"), 202);
    assert.equal(children.length, 0, "a push to another branch starts nothing");
    assert.equal(await deliver([{ added: [], removed: [], modified: ["hookshot/grafana.js"] }]), 202);
    assert.equal(children.length, 1);
    // The daemon stopping ends it.
    await close();
    assert.equal((await children[0]?.exit)?.signal, "SIGTERM");
  });

  it("a list of hundreds of thousands of non-strings is answered 202, as before, and starts nothing", async () => {
    stop = new AbortController();
    await open();
    assert.equal(await deliver([{ added: new Array(300_000).fill(1) }]), 202);
    assert.equal(children.length, 0);
    await close();
  });

  it(`reads the first ${PUSHED_FILES_MAX} files the commits list, no more`, async () => {
    stop = new AbortController();
    await open();
    const filler = Array.from({ length: PUSHED_FILES_MAX - 1 }, (_, i) => `landing/${i}.html`);
    assert.equal(
      await deliver([{ modified: filler }, { added: ["x.txt"], modified: ["hookshot/grafana.js"] }]),
      202,
    );
    assert.equal(children.length, 0, "the transform is one past the bound");
    assert.equal(await deliver([{ modified: filler }, { modified: ["hookshot/grafana.js"] }]), 202);
    assert.equal(children.length, 1, "the transform is at the bound");
    await close();
    assert.equal((await children[0]?.exit)?.signal, "SIGTERM");
  });
});
