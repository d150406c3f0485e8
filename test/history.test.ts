import assert from "node:assert/strict";
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { main } from "../src/cli.js";
import { manifestSchema } from "../src/manifest/schema.js";
import { historyTrigger, reasonOf, type Trigger } from "../src/server/runner.js";
import {
  appendHistory,
  type Compaction,
  findApplied,
  HISTORY_FILE,
  MAX_SCAN_BYTES,
  readHistory,
  routine,
} from "../src/state/history.js";
import { type HistoryRecord, MAX_RECORD_BYTES } from "../src/state/history-record.js";
import { hostRoot, runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/** The deploy history on one host: what `run`, `suspend` and `resume` record, its bounds, and its reader. */

const STEP = {
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
  validate: ["grep", "-q", "ok", "{file}"],
};

let fx: Fixture;
let root: string;
let stateDir: string;
let historyFile: string;

/** A host with a real clone, for the suites that run the CLI. */
function withHost() {
  beforeEach(() => {
    fx = makeFixture({ "landing/index.html": "<p>ok v1</p>\n" });
    root = hostRoot(fx.dir, "history-webhook-secret-0123456789");
    stateDir = path.join(fx.dir, "state");
    historyFile = path.join(stateDir, HISTORY_FILE);
  });
  afterEach(() => fx.cleanup());
}

const manifest = (extra: Record<string, unknown> = {}) =>
  writeManifest(fx.dir, { webhook: { pollIntervalSeconds: 0 }, steps: [STEP], ...extra });
const common = (file: string) => [
  "--config",
  file,
  "--repo",
  fx.clone,
  "--root",
  root,
  "--state-dir",
  stateDir,
];
const lines = () => readFileSync(historyFile, "utf8").split("\n").filter(Boolean);
const parsed = () => lines().map((l) => JSON.parse(l) as HistoryRecord);

/** A record as an older run would have left it, written by hand. */
function handRecord(at: number, reason: string): HistoryRecord {
  return {
    v: 1,
    at: new Date(at).toISOString(),
    host: "lxctest",
    event: "suspend",
    trigger: { kind: "manual", user: "hand" },
    revision: null,
    previousRevision: null,
    result: "suspended",
    verified: false,
    applied: false,
    error: null,
    steps: [],
    durationMs: 0,
    reason,
  };
}
const writeHand = (records: HistoryRecord[]) => {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(historyFile, records.map((r) => `${JSON.stringify(r)}\n`).join(""), { mode: 0o600 });
};

describe("history: the CLI", () => {
  withHost();
  it("records manual runs with the operator's name, nothing for a dry run, and filters by step and limit", async () => {
    const file = manifest();
    const first = await runCli(runArgs(file, fx.clone, root, stateDir), { SUDO_USER: "alice" });
    assert.equal(first.code, 0, first.stderr);
    const dry = await runCli([...runArgs(file, fx.clone, root, stateDir), "--dry-run"], { SUDO_USER: "x" });
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(lines().length, 1, "a dry run records nothing");
    const bad = fx.push({ "landing/index.html": "<p>bad</p>\n" });
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir), { SUDO_USER: "" })).code, 1);

    const res = await runCli(["history", "--json", ...common(file)]);
    assert.equal(res.code, 0, res.stderr);
    const doc = JSON.parse(res.stdout) as { schema: string; skipped: number; records: HistoryRecord[] };
    assert.equal(doc.schema, "deploy-agent/history@1");
    assert.equal(doc.skipped, 0);
    const [failed, ok] = doc.records;
    assert.deepEqual(ok?.trigger, { kind: "manual", user: "alice" });
    assert.equal(ok?.result, "succeeded");
    assert.equal(ok?.applied, true);
    assert.equal(ok?.verified, false, "repo.verify is off");
    assert.equal(ok?.previousRevision, null);
    // SUDO_USER empty: the login name (whoever runs the tests).
    assert.equal(failed?.trigger.kind, "manual");
    assert.notEqual((failed?.trigger as { user?: string } | undefined)?.user ?? "", "");
    assert.equal(failed?.revision, bad);
    assert.equal(failed?.previousRevision, ok?.revision);
    assert.equal(failed?.result, "failed");
    assert.equal(failed?.applied, false);
    assert.deepEqual(
      { step: failed?.error?.step, code: failed?.error?.code },
      { step: "landing", code: "COMMAND_FAILED" },
    );
    assert.deepEqual(
      failed?.steps.map((s) => [s.name, s.outcome, s.code]),
      [["landing", "failed", "COMMAND_FAILED"]],
    );

    const text = await runCli(["history", ...common(file)]);
    const out = text.stdout.split("\n");
    assert.match(
      out[1] ?? "",
      /^\S+ \S+Z {2}run by \S+ {2}[0-9a-f]{12} \(was [0-9a-f]{12}\) {2}failed: landing COMMAND_FAILED {2}\d+\.\ds$/,
    );
    assert.match(out[2] ?? "", /run by alice {2}[0-9a-f]{12} {2}succeeded {2}/);
    const limited = JSON.parse((await runCli(["history", "--json", "--limit", "1", ...common(file)])).stdout);
    assert.equal(limited.records.length, 1);
    assert.equal(limited.records[0].result, "failed", "newest first");
    const none = await runCli(["history", "--step", "nosuchstep", ...common(file)]);
    assert.match(none.stdout, /no run of step nosuchstep recorded/);
  });

  it("--limit takes a whole number from 1 to 10000: anything else is a usage error", async () => {
    const file = manifest();
    for (const bad of ["abc", "0", "-1", "1.5", "10001", "1e3", "", " 5"]) {
      let err = "";
      const code = await main(
        ["history", `--limit=${bad}`, ...common(file)],
        () => {},
        (t) => {
          err += t;
        },
      );
      assert.equal(code, 2, `--limit ${bad}: ${err}`);
      assert.match(err, /error USAGE: --limit takes a whole number from 1 to 10000/);
    }
    const at = await runCli(["history", "--limit", "10000", ...common(file)]);
    assert.equal(at.code, 0, at.stderr);
    assert.match(at.stdout, /nothing recorded yet/);
    assert.equal(
      (await runCli(["status", "--limit", "3", ...common(file)])).code,
      2,
      "history's option only",
    );
  });

  it("the file is 0600 in a 0700 directory, and made so again if someone loosened it", async () => {
    const file = manifest();
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    assert.equal(statSync(historyFile).mode & 0o777, 0o600);
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
    chmodSync(historyFile, 0o644);
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    assert.equal(statSync(historyFile).mode & 0o777, 0o600);
  });

  it("a history that cannot be read is HISTORY_UNREADABLE; one that cannot be written never fails a deploy", async () => {
    const file = manifest();
    mkdirSync(historyFile, { recursive: true });
    const run = await runCli([...runArgs(file, fx.clone, root, stateDir), "--log-level", "warn"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /could not record the run in the deploy history/);
    assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>ok v1</p>\n");
    const res = await runCli(["history", ...common(file)]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^error HISTORY_UNREADABLE: cannot read .*history\.jsonl: EISDIR\nhint: /);
  });

  it("a registered secret forced into a step's error never reaches the history file", async () => {
    const SECRET_VALUE = "history-deploy-token-9f8e7d6c5b4a";
    const envFile = path.join(fx.dir, "test.env");
    writeFileSync(envFile, `DEPLOY_TOKEN=${SECRET_VALUE}\n`, { mode: 0o600 });
    // The command fails, and its argv (with the token) is in the error message.
    const file = manifest({
      steps: [{ ...STEP, validate: ["sh", "-c", 'echo "$0" >&2; exit 3', "${DEPLOY_TOKEN}"] }],
    });
    const res = await runCli([...runArgs(file, fx.clone, root, stateDir), "--env-file", envFile]);
    assert.equal(res.code, 1, res.stderr);
    const raw = readFileSync(historyFile, "utf8");
    assert.ok(!raw.includes(SECRET_VALUE), `secret in the history: ${raw}`);
    assert.ok(!raw.includes(SECRET_VALUE.slice(0, 20)), "not even its head");
    const [rec] = parsed();
    assert.equal(rec?.error?.code, "COMMAND_FAILED");
    assert.match(rec?.error?.message ?? "", /\[redacted\]/);
  });

  it("a run that throws before its steps (UNVERIFIED) is recorded with its error code and revision", async () => {
    writeFileSync(path.join(root, "etc/deploy-agent/allowed_signers"), "");
    const file = manifest({
      repo: { verify: { mode: "tip", allowedSignersFile: "/etc/deploy-agent/allowed_signers" } },
    });
    const res = await runCli(runArgs(file, fx.clone, root, stateDir), { SUDO_USER: "dave" });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /error UNVERIFIED/);
    const [rec] = parsed();
    assert.deepEqual(
      [rec?.trigger, rec?.result, rec?.error?.code, rec?.revision, rec?.verified, rec?.applied, rec?.steps],
      [
        { kind: "manual", user: "dave" },
        "error",
        "UNVERIFIED",
        git(fx.pusher, "rev-parse", "HEAD"),
        false,
        false,
        [],
      ],
    );
    assert.match(
      (await runCli(["history", ...common(file)])).stdout,
      /run by dave {2}[0-9a-f]{12} {2}error: UNVERIFIED {2}\d+\.\ds/,
    );
  });

  it("suspend and resume are recorded with who, and resume's run as theirs", async () => {
    const file = manifest();
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    const s = await runCli(["suspend", "--reason", "Draupnir migration", ...common(file)], {
      SUDO_USER: "bob",
    });
    assert.equal(s.code, 0, s.stderr);
    const rev = fx.push({ "landing/index.html": "<p>ok v2</p>\n" });
    const r = await runCli(["resume", ...common(file)], { SUDO_USER: "carol" });
    assert.equal(r.code, 0, r.stderr);
    // A resume with nothing suspended changes nothing and records nothing.
    assert.equal((await runCli(["resume", ...common(file)], { SUDO_USER: "carol" })).code, 0);
    const recs = parsed().slice(1);
    assert.deepEqual(
      recs.map((x) => [x.event, x.trigger, x.result, x.reason]),
      [
        ["suspend", { kind: "manual", user: "bob" }, "suspended", "Draupnir migration"],
        ["resume", { kind: "manual", user: "carol" }, "resumed", undefined],
        ["run", { kind: "resume", user: "carol" }, "succeeded", undefined],
      ],
    );
    assert.equal(recs[2]?.revision, rev);
    const text = (await runCli(["history", ...common(file)])).stdout;
    assert.match(text, /resume by carol {2}[0-9a-f]{12} \(was [0-9a-f]{12}\) {2}succeeded/);
    assert.match(text, /resume by carol \(at [0-9a-f]{12}\)/);
    assert.match(text, /suspend by bob: Draupnir migration \(at [0-9a-f]{12}\)/);
  });
});

describe("history: bounds", () => {
  withHost();
  it("maxRecords: at the bound nothing is dropped; one past it the oldest goes", async () => {
    const file = manifest({ history: { maxRecords: 10 } });
    const now = Date.now();
    writeHand(Array.from({ length: 9 }, (_, i) => handRecord(now - 600_000 + i * 1000, `hand ${i}`)));
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    assert.equal(lines().length, 10, "at the bound");
    assert.equal(parsed()[0]?.reason, "hand 0");
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    assert.equal(lines().length, 10, "rewritten to the bound");
    assert.deepEqual(
      parsed().map((r) => r.reason ?? r.event),
      [...Array.from({ length: 8 }, (_, i) => `hand ${i + 1}`), "run", "run"],
    );
  });

  it("maxAgeDays: a record older than the bound is dropped when the next one is written; a younger one stays", async () => {
    const file = manifest({ history: { maxAgeDays: 1 } });
    const now = Date.now();
    writeHand([handRecord(now - 2 * 86_400_000, "two days"), handRecord(now - 23 * 3_600_000, "23 hours")]);
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    assert.deepEqual(
      parsed().map((r) => r.reason ?? r.event),
      ["23 hours", "run"],
    );
  });

  it("the manifest takes maxRecords 10..10000 and maxAgeDays 1..3650, defaults 1000 and 90", () => {
    const base = { version: 1, host: "h", listen: { port: 1 }, steps: [STEP] };
    const ok = (history: unknown) => manifestSchema.safeParse({ ...base, history }).success;
    assert.deepEqual(manifestSchema.parse(base).history, { maxRecords: 1000, maxAgeDays: 90 });
    assert.equal(ok({ maxRecords: 10 }), true);
    assert.equal(ok({ maxRecords: 9 }), false);
    assert.equal(ok({ maxRecords: 10_000 }), true);
    assert.equal(ok({ maxRecords: 10_001 }), false);
    assert.equal(ok({ maxAgeDays: 1 }), true);
    assert.equal(ok({ maxAgeDays: 0 }), false);
    assert.equal(ok({ maxAgeDays: 3650 }), true);
    assert.equal(ok({ maxAgeDays: 3651 }), false);
    assert.equal(ok({ maxRecords: 100, keep: 1 }), false, "unknown keys are errors");
  });

  it("a record is kept below MAX_RECORD_BYTES: a long message is cut, then the steps are left out", async () => {
    const long = handRecord(Date.now(), "x");
    const rec: HistoryRecord = {
      ...long,
      event: "run",
      error: { code: "COMMAND_FAILED", message: "m".repeat(100_000) },
      steps: Array.from({ length: 2000 }, (_, i) => ({
        name: `step-${i}`,
        outcome: "succeeded",
        durationMs: 1,
      })),
    };
    await appendHistory(stateDir, rec, { bounds: { maxRecords: 10, maxAgeDays: 1 }, locked: true });
    const [line] = lines();
    assert.ok(Buffer.byteLength(line ?? "") < MAX_RECORD_BYTES, `${Buffer.byteLength(line ?? "")} bytes`);
    const [back] = parsed();
    assert.equal(back?.error?.message.length, 500);
    assert.equal(back?.stepsOmitted, 2000);
  });

  it("a huge file of junk lines: the reader reads past them from the end with bounded memory, and compaction shrinks it", async () => {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const junk = `${"j".repeat(1023)}\n`;
    writeFileSync(historyFile, junk.repeat(24 * 1024), { mode: 0o600 });
    appendFileSync(historyFile, `${JSON.stringify(handRecord(Date.now() - 1000, "valid"))}\n`);
    appendFileSync(
      historyFile,
      `${JSON.stringify({ ...handRecord(Date.now(), "x".repeat(MAX_RECORD_BYTES)) })}\n`,
    );
    const before = statSync(historyFile).size;
    const heap = process.memoryUsage().arrayBuffers;
    const read = await readHistory(stateDir, { limit: 2 });
    assert.ok(process.memoryUsage().arrayBuffers - heap < 4 * 1024 * 1024);
    assert.equal(read.truncated, false, "read to its start: 24 MiB is under MAX_SCAN_BYTES");
    assert.deepEqual(
      read.records.map((r) => r.reason),
      ["valid"],
    );
    assert.equal(read.skipped, 24 * 1024 + 1, "the over-long record line and every junk line are counted");
    await appendHistory(stateDir, handRecord(Date.now(), "after"), {
      bounds: { maxRecords: 10, maxAgeDays: 1 },
      locked: true,
    });
    assert.ok(statSync(historyFile).size < before / 1000, "rewritten to what it holds");
    assert.deepEqual(
      parsed().map((r) => r.reason),
      ["valid", "after"],
    );
  });
});

/** A run that applied `revision`, written by hand; `pad` makes its line longer. */
function appliedRun(at: number, revision: string, pad = 0): HistoryRecord {
  return {
    ...handRecord(at, "x".repeat(pad)),
    event: "run",
    trigger: { kind: "manual", user: "hand" },
    result: "succeeded",
    revision,
    applied: true,
  };
}
const lineOf = (r: HistoryRecord) => `${JSON.stringify(r)}\n`;

describe("history: a damaged or large file hides nothing and loses nothing", () => {
  withHost();
  const compactions: Compaction[] = [];
  const append = (reason: string, maxRecords: number) =>
    appendHistory(stateDir, handRecord(Date.now(), reason), {
      bounds: { maxRecords, maxAgeDays: 1 },
      locked: true,
      onCompact: (c) => compactions.push(c),
    });
  beforeEach(() => {
    compactions.length = 0;
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  });

  it("one 9 MiB line in the middle: every record before and after it reads, `history` shows them, pin finds the oldest, compaction keeps them all byte for byte", async () => {
    const now = Date.now();
    const older = Array.from({ length: 30 }, (_, i) => lineOf(appliedRun(now - 60_000 + i, `rev-${i}`)));
    const newer = Array.from({ length: 5 }, (_, i) => lineOf(appliedRun(now - 1000 + i, `rev-${30 + i}`)));
    writeFileSync(historyFile, [...older, `${"x".repeat(9 * 1024 * 1024)}\n`, ...newer].join(""), {
      mode: 0o600,
    });
    const heap = process.memoryUsage().arrayBuffers;
    const read = await readHistory(stateDir, { limit: 100 });
    assert.ok(process.memoryUsage().arrayBuffers - heap < 4 * 1024 * 1024, "the long line is never held");
    assert.equal(read.records.length, 35);
    assert.equal(read.records.at(-1)?.revision, "rev-0");
    assert.equal(read.skipped, 1);
    assert.equal(read.truncated, false);
    assert.equal((await findApplied(stateDir, "rev-0"))?.revision, "rev-0");
    assert.equal((await findApplied(stateDir, "rev-34"))?.revision, "rev-34");

    const file = manifest();
    const text = await runCli(["history", "--limit", "100", ...common(file)]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /warning: 1 invalid line\(s\) skipped/);
    assert.match(text.stdout, /rev-0\b/);
    assert.match(text.stdout, /rev-34\b/);
    const json = JSON.parse((await runCli(["history", "--json", "--limit", "100", ...common(file)])).stdout);
    assert.equal(json.records.length, 35);

    await append("after", 1000);
    assert.deepEqual(compactions, [{ kept: 36, old: 0, pastMaxRecords: false, invalid: 1 }]);
    assert.equal(
      readFileSync(historyFile, "utf8"),
      [...older, ...newer, `${lines().at(-1)}\n`].join(""),
      "the long line gone, every record kept as it was",
    );
  });

  it("a 20 MiB file within maxRecords 10,000: the oldest record is found, and compaction drops only the one past the bound", async () => {
    const now = Date.now();
    const all = Array.from({ length: 10_000 }, (_, i) =>
      lineOf(appliedRun(now - 20_000 + i, `rev-${i}`, 2000)),
    );
    writeFileSync(historyFile, all.join(""), { mode: 0o600 });
    assert.ok(statSync(historyFile).size > 20 * 1024 * 1024);
    const heap = process.memoryUsage().arrayBuffers;
    const read = await readHistory(stateDir);
    assert.ok(process.memoryUsage().arrayBuffers - heap < 4 * 1024 * 1024);
    assert.deepEqual(
      read.records.slice(0, 2).map((r) => r.revision),
      ["rev-9999", "rev-9998"],
    );
    assert.equal((await findApplied(stateDir, "rev-0"))?.revision, "rev-0");

    await append("after", 10_000);
    assert.deepEqual(compactions, [{ kept: 10_000, old: 0, pastMaxRecords: true, invalid: 0 }]);
    const kept = lines();
    assert.equal(kept.length, 10_000);
    assert.equal(`${kept[0]}\n`, all[1], "only the oldest record is past maxRecords");
    assert.equal((await findApplied(stateDir, "rev-1"))?.revision, "rev-1");
  });

  it("a killed writer's torn last line: skipped and counted; the next record starts its own line; a rewrite drops only it", async () => {
    const now = Date.now();
    const records = Array.from({ length: 12 }, (_, i) => lineOf(appliedRun(now - 1000 + i, `rev-${i}`)));
    const torn = (records[0] ?? "").slice(0, 40);
    writeFileSync(historyFile, [...records, torn].join(""), { mode: 0o600 });
    const read = await readHistory(stateDir, { limit: 100 });
    assert.equal(read.records.length, 12);
    assert.equal(read.skipped, 1);
    assert.equal((await findApplied(stateDir, "rev-11"))?.revision, "rev-11");
    await append("within", 1000);
    assert.deepEqual(compactions, [], "a torn line alone leaves the file as it is");
    assert.equal(lines().at(-2), torn);
    await append("past", 10);
    assert.deepEqual(compactions, [{ kept: 10, old: 0, pastMaxRecords: true, invalid: 1 }]);
    assert.deepEqual(
      parsed().map((r) => r.revision ?? r.reason),
      ["rev-4", "rev-5", "rev-6", "rev-7", "rev-8", "rev-9", "rev-10", "rev-11", "within", "past"],
    );
  });

  it("a line that is not UTF-8 is skipped and counted, and the records around it read", async () => {
    const now = Date.now();
    const bad = Buffer.from(
      lineOf(appliedRun(now - 500, "rev-bad")).replace("rev-bad", "rev-\u00ff"),
      "latin1",
    );
    writeFileSync(
      historyFile,
      Buffer.concat([
        Buffer.from(lineOf(appliedRun(now - 1000, "rev-a"))),
        bad,
        Buffer.from(`\ufeff${lineOf(appliedRun(now - 100, "rev-b"))}`),
        Buffer.from(lineOf(appliedRun(now, "rev-c")).replace("\n", "\r\n")),
      ]),
      { mode: 0o600 },
    );
    const read = await readHistory(stateDir);
    assert.deepEqual(
      read.records.map((r) => r.revision),
      ["rev-c", "rev-b", "rev-a"],
      "a CR before the line break and a BOM before the record (an editor's) read",
    );
    assert.equal(read.skipped, 1);
    assert.equal(await findApplied(stateDir, "rev-\ufffd"), null);
  });

  it("the bounds: a line of MAX_RECORD_BYTES - 1 bytes is a record, one more byte is not; the scan stops at its bound and says so", async () => {
    const at = Date.now();
    const base = JSON.stringify(appliedRun(at, "rev-fit"));
    const fit = JSON.stringify(appliedRun(at, "rev-fit", MAX_RECORD_BYTES - 1 - base.length));
    const over = JSON.stringify(appliedRun(at, "rev-ovr", MAX_RECORD_BYTES - base.length));
    assert.equal(Buffer.byteLength(fit), MAX_RECORD_BYTES - 1);
    assert.equal(Buffer.byteLength(over), MAX_RECORD_BYTES);
    writeFileSync(historyFile, `${fit}\n${over}\n`, { mode: 0o600 });
    const read = await readHistory(stateDir);
    assert.deepEqual(
      read.records.map((r) => r.revision),
      ["rev-fit"],
    );
    assert.equal(read.skipped, 1);

    const three = [0, 1, 2].map((i) => lineOf(appliedRun(at + i, `rev-${i}`)));
    writeFileSync(historyFile, three.join(""), { mode: 0o600 });
    const lastTwo = Buffer.byteLength(three[1] ?? "") + Buffer.byteLength(three[2] ?? "");
    const atBound = await readHistory(stateDir, { scanBytes: lastTwo });
    assert.deepEqual(
      atBound.records.map((r) => r.revision),
      ["rev-2", "rev-1"],
    );
    assert.equal(atBound.truncated, true);
    assert.equal(atBound.skipped, 0, "the line cut by the bound is not counted");
    const under = await readHistory(stateDir, { scanBytes: lastTwo - 1 });
    assert.deepEqual(
      under.records.map((r) => r.revision),
      ["rev-2"],
    );
    assert.equal((await readHistory(stateDir, { scanBytes: lastTwo, limit: 2 })).truncated, false);
    assert.ok(MAX_SCAN_BYTES >= 10_000 * MAX_RECORD_BYTES, "a file within its largest bounds is read whole");
  });

  it("compaction copies the records it keeps as they were: a newer agent's fields stay; an empty file stays empty", async () => {
    const now = Date.now();
    const newer = `${JSON.stringify({ ...appliedRun(now, "rev-new"), future: { x: 1 } })}\n`;
    const old = lineOf(appliedRun(now - 3 * 86_400_000, "rev-old"));
    writeFileSync(historyFile, "", { mode: 0o600 });
    assert.deepEqual((await readHistory(stateDir)).records, []);
    writeFileSync(historyFile, `${old}${newer}`, { mode: 0o600 });
    await append("after", 10);
    assert.deepEqual(compactions, [{ kept: 2, old: 1, pastMaxRecords: false, invalid: 0 }]);
    assert.equal(lines()[0], newer.trim());
  });
});

describe("history: which runs are worth a record", () => {
  const run = (fields: Partial<HistoryRecord>): HistoryRecord => ({
    ...handRecord(Date.now(), ""),
    event: "run",
    result: "noop",
    revision: "a",
    previousRevision: "a",
    reason: undefined,
    ...fields,
  });
  const poll = { kind: "poll" } as const;
  const cases: [string, HistoryRecord, HistoryRecord | null, boolean][] = [
    ["a poll finding nothing new", run({ trigger: poll }), null, true],
    [
      "a poll deploying a new revision",
      run({ trigger: poll, revision: "b", result: "succeeded" }),
      null,
      false,
    ],
    [
      "a poll finding a revision with nothing for this host",
      run({ trigger: poll, revision: "b" }),
      null,
      false,
    ],
    ["a push with nothing new", run({ trigger: { kind: "push", delivery: "d" } }), null, false],
    ["a start-up with nothing new", run({ trigger: { kind: "start-up" } }), null, false],
    ["an operator's run with nothing new", run({ trigger: { kind: "manual", user: "u" } }), null, false],
    [
      "a poll repeating the newest poll's failure",
      run({ trigger: poll, result: "error", error: { code: "UNVERIFIED", message: "m" } }),
      run({ trigger: poll, result: "error", error: { code: "UNVERIFIED", message: "other" } }),
      true,
    ],
    [
      "a retry repeating the newest poll's failure",
      run({
        trigger: { kind: "retry", after: "FETCH_FAILED" },
        result: "error",
        error: { code: "FETCH_FAILED", message: "" },
      }),
      run({ trigger: poll, result: "error", error: { code: "FETCH_FAILED", message: "" } }),
      true,
    ],
    [
      "a poll failing after a push failed the same way",
      run({ trigger: poll, result: "error", error: { code: "UNVERIFIED", message: "m" } }),
      run({
        trigger: { kind: "push", delivery: "d" },
        result: "error",
        error: { code: "UNVERIFIED", message: "m" },
      }),
      false,
    ],
    [
      "a poll failing with another code",
      run({ trigger: poll, result: "error", error: { code: "FETCH_FAILED", message: "m" } }),
      run({ trigger: poll, result: "error", error: { code: "UNVERIFIED", message: "m" } }),
      false,
    ],
    ["a suspend", { ...handRecord(Date.now(), "r"), trigger: poll }, null, false],
  ];
  it("appendHistory writes no routine record: a poll finding nothing new leaves the file as it was", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-history-"));
    try {
      const bounds = { maxRecords: 10, maxAgeDays: 1 };
      const push = run({ trigger: { kind: "push", delivery: "d" }, result: "succeeded" });
      assert.equal(await appendHistory(dir, push, { bounds, locked: true }), true);
      const before = readFileSync(path.join(dir, HISTORY_FILE), "utf8");
      assert.equal(await appendHistory(dir, run({ trigger: poll }), { bounds, locked: true }), false);
      assert.equal(readFileSync(path.join(dir, HISTORY_FILE), "utf8"), before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("an append finds the newest record past a torn line within 4 record lengths; behind more junk it records the run", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-history-"));
    try {
      const bounds = { maxRecords: 1000, maxAgeDays: 1 };
      const failing = () =>
        run({ trigger: poll, result: "error", error: { code: "FETCH_FAILED", message: "m" } });
      const file = path.join(dir, HISTORY_FILE);
      assert.equal(await appendHistory(dir, failing(), { bounds, locked: true }), true);
      const recordBytes = statSync(file).size;
      // A torn line that leaves the newest record's start exactly 4 record lengths from the file's end.
      appendFileSync(file, `{${"t".repeat(4 * MAX_RECORD_BYTES - recordBytes - 1)}`);
      assert.equal(statSync(file).size, 4 * MAX_RECORD_BYTES);
      assert.equal(
        await appendHistory(dir, failing(), { bounds, locked: true }),
        false,
        "a repeat: not recorded",
      );
      appendFileSync(file, "t");
      assert.equal(
        await appendHistory(dir, failing(), { bounds, locked: true }),
        true,
        "past the bound: recorded",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  for (const [name, record, newest, expected] of cases) {
    it(`${name}: ${expected ? "not recorded" : "recorded"}`, () =>
      assert.equal(routine(record, newest), expected));
  }
});

describe("history: the daemon's triggers as the record's trigger", () => {
  const push = (delivery: string): Trigger => ({ kind: "push", after: "0123456789abcdef", delivery });
  const cases: [Trigger[], unknown][] = [
    [[push("d-1")], { kind: "push", delivery: "d-1" }],
    [
      [{ kind: "poll" }, push("a (b)"), { kind: "start-up", task: "deploy" }],
      { kind: "push", delivery: "a (b)" },
    ],
    [[{ kind: "poll" }], { kind: "poll" }],
    [[{ kind: "start-up", task: "deploy" }], { kind: "start-up" }],
    [
      [{ kind: "self-heal", steps: ["landing", "units"] }],
      { kind: "self-heal", steps: ["landing", "units"] },
    ],
    [[{ kind: "retry", after: "FETCH_FAILED" }], { kind: "retry", after: "FETCH_FAILED" }],
  ];
  for (const [triggers, trigger] of cases) {
    it(`${triggers.map(reasonOf).join(" + ")}`, () => assert.deepEqual(historyTrigger(triggers), trigger));
  }
});
