import assert from "node:assert/strict";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { localStatusSchema, serveStatusSchema } from "../src/server/status-model.js";
import {
  hostRoot,
  listeningUrl,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/**
 * The status model is the /status document's one definition: what a real daemon serves parses with it and
 * loses nothing in the parse (a field the model lacks would be dropped, and the comparison fails).
 */

const SECRET = "status-model-webhook-secret-0123";
let fx: Fixture;
let root: string;
let stateDir: string;
let daemon: Served | undefined;
let receiver: Server | undefined;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>ok v1</p>\n" });
  root = hostRoot(fx.dir, SECRET);
  stateDir = path.join(fx.dir, "state");
});
afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  receiver?.close();
  receiver = undefined;
  fx.cleanup();
});

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}\n${daemon?.out() ?? ""}`);
    await sleep(100);
  }
}

describe("the status model against a real daemon", () => {
  it("/status with every part filled in (last run, error, drift, pin, suspension, notices) parses, field for field", async () => {
    receiver = createServer((_req, res) => res.writeHead(204).end());
    await new Promise<void>((r) => receiver?.listen(0, "127.0.0.1", r));
    const notifyUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/notice`;
    const file = writeManifest(fx.dir, {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 1 },
      notify: { targets: [{ kind: "webhook", url: notifyUrl }] },
      steps: [
        { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
      ],
    });
    daemon = startCli([...serveArgs(file, fx.clone, root), "--state-dir", stateDir]);
    const url = await listeningUrl(daemon);
    const status = async () => (await (await fetch(`${url}/status`)).json()) as Record<string, unknown>;
    await until("the start-up run", async () => ((await status()).lastRun ? true : undefined));
    // Drift with an item that is not in sync (the step has no selfHeal: it stays drifted).
    writeFileSync(path.join(root, "var/www/index.html"), "<p>edited by hand</p>\n");
    await until("drift seen", async () =>
      JSON.stringify((await status()).drift).includes('"state":"drifted"') ? true : undefined,
    );
    const cli = (...args: string[]) =>
      runCli([...args, "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir], {
        SUDO_USER: "jared",
      });
    const head = git(fx.clone, "rev-parse", "HEAD");
    // The drift check (every second) holds the deploy lock for a moment: the pin waits for it.
    const pinned = await cli("pin", head, "--reason", "hold", "--wait", "30");
    assert.equal(pinned.code, 0, pinned.stderr);
    const suspended = await cli("suspend", "--reason", "maintenance");
    assert.equal(suspended.code, 0, suspended.stderr);
    // An error before the steps: the origin is gone, the next push cannot be fetched.
    renameSync(fx.origin, `${fx.origin}.gone`);
    const body = pushBody({ after: "1".repeat(40) });
    const res = await fetch(`${url}/hooks/deploy`, {
      method: "POST",
      headers: giteaHeaders(body, SECRET, "push", "d-1"),
      body: new Uint8Array(body),
    });
    assert.equal(res.status, 202);
    const doc = await until("the error and a sent notice", async () => {
      const s = await status();
      const notices = JSON.stringify(s.notifications);
      return s.lastError && notices.includes('"lastSuccessAt":"') ? s : undefined;
    });
    for (const key of ["lastRun", "lastError", "drift", "pinned", "suspended", "deployedRevision"])
      assert.notEqual(doc[key], null, `${key} is filled in`);
    const parsed = serveStatusSchema.safeParse(doc);
    assert.ok(parsed.success, parsed.success ? "" : JSON.stringify(parsed.error.issues));
    assert.deepEqual(parsed.data, doc, "every field served is in the model");

    const local = await cli("status", "--json");
    assert.equal(local.code, 0, local.stderr);
    const localDoc = JSON.parse(local.stdout) as unknown;
    const localParsed = localStatusSchema.safeParse(localDoc);
    assert.ok(localParsed.success, localParsed.success ? "" : JSON.stringify(localParsed.error.issues));
    assert.deepEqual(localParsed.data, localDoc, "every field of status --json is in the model");
  });
});

describe("fleet reads each host's /status with the model", () => {
  it("a newer host's extra fields are accepted; a missing field, a wrong type, non-JSON, a number past the float range and a negative year are that host's error, named", async () => {
    const head = git(fx.pusher, "rev-parse", "HEAD");
    const valid = {
      deployedRevision: head,
      suspended: null,
      lastError: null,
      health: { ok: true },
      lastRun: null,
      steps: [
        {
          name: "landing",
          kind: "file",
          lastAppliedRevision: head,
          lastAttemptedRevision: head,
          lastResult: null,
        },
      ],
    };
    const { health: _, ...withoutHealth } = valid;
    const answers: Record<string, string> = {
      newer: JSON.stringify({
        ...valid,
        schema: "deploy-agent/serve-status@1",
        rollout: { wave: 2 },
        steps: valid.steps.map((s) => ({ ...s, canary: true })),
      }),
      missing: JSON.stringify(withoutHealth),
      wrongtype: JSON.stringify({ ...valid, steps: "all of them" }),
      notjson: "<html>502 Bad Gateway</html>",
      nothing: "null",
      // JSON.parse reads 1e999 as Infinity; the job's name carries an escape sequence.
      huge: JSON.stringify(valid).replace(
        /\}$/,
        ',"jobs":{"\\u001b[2Jx":{"message":"m","gauge":1e999,"at":"2026-01-01T00:00:00.000Z"}}}',
      ),
      negative: JSON.stringify({
        ...valid,
        suspended: { reason: "r", since: "-000001-01-01T00:00:00.000Z" },
      }),
    };
    receiver = createServer((req, res) => {
      const name = /^\/(\w+)\/status$/.exec(req.url ?? "")?.[1] ?? "";
      res.writeHead(200, { "content-type": "application/json" }).end(answers[name] ?? "{}");
    });
    await new Promise<void>((r) => receiver?.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const config = path.join(fx.pusher, "config");
    mkdirSync(config, { recursive: true });
    for (const name of Object.keys(answers))
      writeFileSync(
        path.join(config, `${name}.yaml`),
        stringify({ version: 1, host: name, publicUrl: `${base}/${name}` }),
      );
    const res = await runCli(["fleet", "status", "--repo", fx.pusher]);
    assert.equal(res.code, 1, res.stderr);
    const line = (host: string) => res.stdout.split("\n").find((l) => l.startsWith(`${host} `)) ?? "";
    const refused = (host: string) =>
      `HTTP_REFUSED: ${base}/${host}/status answered something that is not an agent's status: `;
    assert.match(line("newer"), new RegExp(`^newer +${head.slice(0, 12)} .*up to date`));
    assert.equal(
      line("missing"),
      `missing  ${refused("missing")}health: Invalid input: expected object, received undefined`,
    );
    assert.equal(
      line("wrongtype"),
      `wrongtype ${refused("wrongtype")}steps: Invalid input: expected array, received string`,
    );
    assert.equal(
      line("notjson"),
      `notjson  HTTP_REFUSED: ${base}/notjson/status answered something that is not JSON`,
    );
    assert.equal(
      line("nothing"),
      `nothing  ${refused("nothing")}the document: Invalid input: expected object, received null`,
    );
    assert.equal(
      line("huge"),
      `huge     ${refused("huge")}jobs.?[2Jx.gauge: Invalid input: expected number, received Infinity`,
    );
    assert.equal(line("negative"), `negative ${refused("negative")}suspended.since: Invalid ISO datetime`);
    assert.equal(res.stdout.includes("\u001b"), false, "no escape character reaches the terminal");
  });
});
