import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { HISTORY_FILE } from "../src/state/history.js";
import type { HistoryRecord } from "../src/state/history-record.js";
import {
  freePort,
  hostRoot,
  listeningUrl,
  runArgs,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/** The deploy history kept by the real daemon: pushes, a kill -9 mid-run, /history's access rule, the fleet. */

const SECRET = "history-serve-secret-0123456789";
const STEP = {
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
  // A page must say "ok"; one that says "slow" takes 30 s to validate (a run to kill in the middle).
  validate: ["sh", "-c", 'if grep -q slow "$0"; then sleep 30; fi; grep -q ok "$0"', "{file}"],
};

let fixtures: Fixture[] = [];
let daemons: Served[] = [];
afterEach(async () => {
  for (const d of daemons) d.child.kill("SIGKILL");
  await Promise.all(daemons.map((d) => d.exited));
  daemons = [];
  for (const f of fixtures) f.cleanup();
  fixtures = [];
});

function host() {
  const fx = makeFixture({ "landing/index.html": "<p>ok v1</p>\n" });
  fixtures.push(fx);
  const root = hostRoot(fx.dir, SECRET);
  const stateDir = path.join(fx.dir, "state");
  return { fx, root, stateDir };
}

async function serve(manifest: string, clone: string, root: string, stateDir: string, listen?: string) {
  const d = startCli([...serveArgs(manifest, clone, root, listen), "--state-dir", stateDir]);
  daemons.push(d);
  const url = await listeningUrl(d);
  return { d, url };
}

async function push(url: string, rev: string, delivery: string) {
  const body = pushBody({ after: rev });
  const res = await fetch(`${url}/hooks/deploy`, {
    method: "POST",
    headers: giteaHeaders(body, SECRET, "push", delivery),
    body: new Uint8Array(body),
  });
  assert.equal(res.status, 202);
}

type Doc = { schema: string; host: string; skipped: number; records: HistoryRecord[] };

/** /history once it holds `count` records. */
async function historyOf(url: string, count: number, init: RequestInit = {}): Promise<Doc> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const doc = (await (await fetch(`${url}/history?limit=100`, init)).json()) as Doc;
    if (doc.records.length >= count) return doc;
    if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(doc)}`);
    await sleep(50);
  }
}

describe("history: the daemon", () => {
  it("start-up, a push, a failing push, then an operator's run: each with its trigger, revisions and outcome", async () => {
    const { fx, root, stateDir } = host();
    const manifest = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      steps: [STEP],
    });
    const v1 = git(fx.clone, "rev-parse", "HEAD");
    const { d, url } = await serve(manifest, fx.clone, root, stateDir);
    await historyOf(url, 1);
    const v2 = fx.push({ "landing/index.html": "<p>ok v2</p>\n" });
    await push(url, v2, "delivery-ok-1");
    await historyOf(url, 2);
    const v3 = fx.push({ "landing/index.html": "<p>bad v3</p>\n" });
    await push(url, v3, "delivery-bad-2");
    const doc = await historyOf(url, 3);
    assert.equal(doc.schema, "deploy-agent/history@1");
    d.child.kill("SIGTERM");
    await d.exited;
    const v4 = fx.push({ "landing/index.html": "<p>ok v4</p>\n" });
    const manual = await runCli(runArgs(manifest, fx.clone, root, stateDir), { SUDO_USER: "alice" });
    assert.equal(manual.code, 0, manual.stderr);

    const res = await runCli(["history", "--json", "--config", manifest, "--state-dir", stateDir]);
    const records = (JSON.parse(res.stdout) as Doc).records;
    assert.deepEqual(
      records.map((r) => [
        r.trigger,
        r.revision,
        r.previousRevision,
        r.result,
        r.error?.step,
        r.error?.code,
        r.applied,
      ]),
      [
        [{ kind: "manual", user: "alice" }, v4, v3, "succeeded", undefined, undefined, true],
        [{ kind: "push", delivery: "delivery-bad-2" }, v3, v2, "failed", "landing", "COMMAND_FAILED", false],
        [{ kind: "push", delivery: "delivery-ok-1" }, v2, v1, "succeeded", undefined, undefined, true],
        [{ kind: "start-up" }, v1, null, "succeeded", undefined, undefined, true],
      ],
    );
    for (const r of records) assert.ok(r.durationMs >= 0 && r.steps.length === 1, JSON.stringify(r));
    const text = (await runCli(["history", "--config", manifest, "--state-dir", stateDir])).stdout;
    assert.match(
      text,
      /push \(delivery delivery-bad-2\) {2}[0-9a-f]{12} \(was [0-9a-f]{12}\) {2}failed: landing COMMAND_FAILED/,
    );
    assert.match(text, /start-up {2}[0-9a-f]{12} {2}succeeded/);
    const only = JSON.parse(
      (
        await runCli([
          "history",
          "--json",
          "--step",
          "landing",
          "--limit",
          "2",
          "--config",
          manifest,
          "--state-dir",
          stateDir,
        ])
      ).stdout,
    ) as Doc;
    assert.equal(only.records.length, 2);
  });

  it("kill -9 in the middle of a run, then a torn line: the history still reads, the torn line skipped and counted", async () => {
    const { fx, root, stateDir } = host();
    const manifest = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      steps: [STEP],
    });
    const { d, url } = await serve(manifest, fx.clone, root, stateDir);
    await historyOf(url, 1);
    const slow = fx.push({ "landing/index.html": "<p>ok slow</p>\n" });
    await push(url, slow, "delivery-slow");
    // The step has started once its intent is in the state file.
    const stateFile = path.join(stateDir, "state.json");
    for (let i = 0; !readFileSync(stateFile, "utf8").includes(`"lastAttemptedRevision": "${slow}"`); i++) {
      assert.ok(i < 600, "the slow step never started");
      await sleep(50);
    }
    d.child.kill("SIGKILL");
    await d.exited;
    const file = path.join(stateDir, HISTORY_FILE);
    const torn = '{"v":1,"at":"2025-01-01T00:00:00.000Z","host":"lxc';
    appendFileSync(file, torn);

    const common = ["--config", manifest, "--state-dir", stateDir];
    const read = JSON.parse((await runCli(["history", "--json", ...common])).stdout) as Doc;
    assert.equal(read.skipped, 1);
    assert.deepEqual(
      read.records.map((r) => r.trigger.kind),
      ["start-up"],
    );
    assert.match((await runCli(["history", ...common])).stdout, /warning: 1 invalid line\(s\) skipped/);
    fx.push({ "landing/index.html": "<p>ok v3</p>\n" });
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    const lines = readFileSync(file, "utf8").split("\n");
    assert.equal(lines[1], torn, "the torn line stays alone on its line");
    assert.equal((JSON.parse(lines[2] ?? "") as HistoryRecord).trigger.kind, "manual");
    const again = JSON.parse((await runCli(["history", "--json", ...common])).stdout) as Doc;
    assert.equal(again.skipped, 1);
    assert.deepEqual(
      again.records.map((r) => r.trigger.kind),
      ["manual", "start-up"],
    );
  });

  it("/history answers as /status does: 403 to a disallowed source, whatever the query; the token opens it; bad queries 400", async () => {
    const { fx, root, stateDir } = host();
    writeFileSync(path.join(root, "etc/deploy-agent/status-token"), "status-token-0123456789abcdef\n", {
      mode: 0o600,
    });
    const manifest = writeManifest(fx.dir, {
      webhook: {
        pollIntervalSeconds: 0,
        statusAccess: { allowFrom: ["10.99.0.0/16"], tokenFile: "/etc/deploy-agent/status-token" },
      },
      drift: { intervalSeconds: 0 },
      steps: [STEP],
    });
    const { url } = await serve(manifest, fx.clone, root, stateDir);
    for (const q of ["", "?limit=5", "?step=landing", "/", "?", "?limit=abc"]) {
      const res = await fetch(`${url}/history${q}`);
      assert.equal(res.status, q === "/" ? 404 : 403, `/history${q}`);
    }
    assert.equal(
      (await fetch(`${url}/history`, { headers: { authorization: "Bearer wrong-token-0123456789abc" } }))
        .status,
      403,
    );
    const auth = { headers: { authorization: "Bearer status-token-0123456789abcdef" } };
    const doc = await historyOf(url, 1, auth);
    assert.equal(doc.host, "lxctest");
    for (const q of ["limit=0", "limit=1001", "limit=abc", "limit=1e3", "limt=5", "step="]) {
      assert.equal((await fetch(`${url}/history?${q}`, auth)).status, 400, q);
    }
    const most = await fetch(`${url}/history?limit=1000&step=landing`, auth);
    assert.equal(most.status, 200);
    assert.equal(((await most.json()) as Doc).records.length, 1);
  });
});

describe("history: the fleet", () => {
  it("fleet history merges two real agents' runs by time and names the one it cannot reach by its URL", async () => {
    const [pa, pb, dead] = [await freePort(), await freePort(), await freePort()];
    const config = (h: string, port: number) =>
      stringify({
        version: 1,
        host: h,
        listen: { host: "127.0.0.1", port },
        publicUrl: `http://127.0.0.1:${port}`,
        webhook: { pollIntervalSeconds: 0 },
        drift: { intervalSeconds: 0 },
        steps: [{ ...STEP, source: `pages/${h}.html` }],
      });
    const fx = makeFixture({
      "config/hosta.yaml": config("hosta", pa),
      "config/hostb.yaml": config("hostb", pb),
      "config/hostc.yaml": config("hostc", dead),
      "pages/hosta.html": "<p>ok a1</p>\n",
      "pages/hostb.html": "<p>ok b1</p>\n",
    });
    fixtures.push(fx);
    const urls: string[] = [];
    for (const [h, port] of [
      ["hosta", pa],
      ["hostb", pb],
    ] as const) {
      const dir = path.join(fx.dir, h);
      const root = hostRoot(dir, SECRET);
      const clone = path.join(dir, "clone");
      git(fx.dir, "clone", "--quiet", fx.origin, clone);
      const { url } = await serve(
        path.join(clone, "config", `${h}.yaml`),
        clone,
        root,
        path.join(dir, "state"),
        `127.0.0.1:${port}`,
      );
      urls.push(url);
      await historyOf(url, 1);
    }
    const [ua = "", ub = ""] = urls;
    const rev = fx.push({ "pages/hostb.html": "<p>ok b2</p>\n" });
    await push(ub, rev, "delivery-b");
    await historyOf(ub, 2);
    await push(ua, rev, "delivery-a");
    await historyOf(ua, 2);

    const res = await runCli(["fleet", "history", "--json", "--limit", "3", "--repo", fx.pusher]);
    assert.equal(res.code, 1, `a host could not be asked: ${res.stdout}${res.stderr}`);
    const doc = JSON.parse(res.stdout) as {
      schema: string;
      hosts: { host: string; reachable: boolean; problem: string | null; code: string | null }[];
      records: (HistoryRecord & { host: string })[];
    };
    assert.equal(doc.schema, "deploy-agent/fleet-history@1");
    assert.deepEqual(
      doc.records.map((r) => [r.host, r.trigger.kind]),
      [
        ["hosta", "push"],
        ["hostb", "push"],
        // The newer of the two start-ups: hostb started after hosta's start-up run was recorded.
        ["hostb", "start-up"],
      ],
    );
    assert.equal(doc.records[0]?.result, "noop", "nothing for hosta in that push");
    assert.equal(doc.records[1]?.result, "succeeded");
    assert.match(
      doc.hosts.find((h) => h.host === "hostc")?.problem ?? "",
      new RegExp(`^http://127\\.0\\.0\\.1:${dead}/history unreachable: `),
    );
    assert.equal(doc.hosts.find((h) => h.host === "hostc")?.code, "HTTP_UNAVAILABLE");
    const text = await runCli(["fleet", "history", "--repo", fx.pusher]);
    const lines = text.stdout.trim().split("\n");
    assert.match(
      lines[0] ?? "",
      new RegExp(`^hostc +HTTP_UNAVAILABLE: http://127\\.0\\.0\\.1:${dead}/history unreachable`),
    );
    assert.match(
      lines[1] ?? "",
      /^hosta +\S+ \S+Z {2}push \(delivery delivery-a\) {2}[0-9a-f]{12} \(was [0-9a-f]{12}\) {2}noop/,
    );
    assert.match(lines[2] ?? "", /^hostb +\S+ \S+Z {2}push \(delivery delivery-b\) .* succeeded/);
    assert.match(lines[3] ?? "", /^hostb +\S+ \S+Z {2}start-up /);
    assert.match(lines[4] ?? "", /^hosta +\S+ \S+Z {2}start-up /);
    assert.match(lines[5] ?? "", /^hint: HTTP_UNAVAILABLE: check that the agent runs/);
    assert.equal(lines.length, 6);
  });
});
