import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CLI, hostRoot, PROJECT, serveArgs, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/**
 * Under journald each log line carries its syslog priority (`<N>` in front, which journald strips), so
 * `journalctl -p warning` filters the agent's lines; elsewhere lines are plain JSON.
 */

let fx: Fixture;
beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
});
afterEach(() => fx.cleanup());

/** serve with stdout and stderr in a file, JOURNAL_STREAM naming `journal` (or nothing); its lines. */
async function serveInto(journal: "this file" | "another file" | "unset"): Promise<string[]> {
  const secret = "journal-test-secret-0123456789";
  const root = hostRoot(fx.dir, secret);
  const manifest = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
  const out = path.join(fx.dir, `out-${journal.replace(" ", "-")}.log`);
  const fd = openSync(out, "w");
  const other = statSync(PROJECT, { bigint: true });
  const mine = statSync(out, { bigint: true });
  const stream = journal === "this file" ? `${mine.dev}:${mine.ino}` : `${other.dev}:${other.ino}`;
  const env = { ...process.env, ...(journal === "unset" ? {} : { JOURNAL_STREAM: stream }) };
  if (journal === "unset") delete env.JOURNAL_STREAM;
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--",
      CLI,
      ...serveArgs(manifest, fx.clone, root),
      "--state-dir",
      path.join(fx.dir, `state-${journal}`),
    ],
    { cwd: PROJECT, env, stdio: ["ignore", fd, fd] },
  );
  closeSync(fd);
  try {
    let url = "";
    for (let i = 0; i < 400 && !url; i++) {
      await sleep(50);
      url = /"address":"(http:\/\/[^"]+)"/.exec(readFileSync(out, "utf8"))?.[1] ?? "";
    }
    assert.ok(url, readFileSync(out, "utf8"));
    // A warning: a delivery with a wrong signature.
    const res = await fetch(`${url}/hooks/deploy`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 401);
    for (let i = 0; i < 100 && !readFileSync(out, "utf8").includes('"outcome":"bad_signature"'); i++)
      await sleep(50);
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
  return readFileSync(out, "utf8").split("\n").filter(Boolean);
}

describe("journal priorities", () => {
  it("on the journal's stream: <6> before info lines, <4> before warnings, each still one JSON object", async () => {
    const lines = await serveInto("this file");
    const listening = lines.find((l) => l.includes('"msg":"listening"'));
    const warned = lines.find((l) => l.includes('"outcome":"bad_signature"'));
    assert.match(listening ?? "", /^<6>\{"level":30,/);
    assert.match(warned ?? "", /^<4>\{"level":40,/);
    for (const l of lines) {
      const m = /^<([0-7])>(\{.*\})$/.exec(l);
      assert.ok(m, `a priority and one JSON object: ${l}`);
      JSON.parse(m[2] ?? "");
    }
  });

  it("elsewhere (JOURNAL_STREAM unset, or naming another file: a redirected stdout) lines are plain JSON", async () => {
    for (const where of ["unset", "another file"] as const) {
      const lines = await serveInto(where);
      assert.ok(lines.some((l) => l.includes('"msg":"listening"')));
      for (const l of lines) assert.match(l, /^\{"level":\d+,/, `${where}: ${l}`);
    }
  });
});
