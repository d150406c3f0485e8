import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import { COMMAND_OUTPUT_MAX_BYTES, createCommandRunner } from "../src/host/command.js";
import { runProcess } from "../src/host/process.js";

/** runProcess: the one way the daemon runs a process (host commands, the transform checks' child). */
const big = { stdout: 1 << 20, stderr: 1 << 20 };
const sh = (script: string, o: Partial<Parameters<typeof runProcess>[2]> = {}) =>
  runProcess("sh", ["-c", script, "sh"], { maxBytes: big, ...o });

describe("runProcess", () => {
  it("passes stdin, keeps each stream and both in the order they came, and the exit code", async () => {
    const r = await sh('read -r line; echo "out:$line"; echo err >&2; echo out2; exit 3', {
      input: "hello\n",
      stripFinalNewline: true,
    });
    assert.equal(r.exitCode, 3);
    assert.equal(r.signal, null);
    assert.equal(r.stdout, "out:hello\nout2");
    assert.equal(r.stderr, "err");
    assert.match(r.all, /^out:hello\n(err\nout2|out2\nerr)$/);
    assert.equal(r.timedOut || r.canceled || r.overflow !== undefined, false);
  });

  it("keeps a final newline unless told, and strips \\r\\n as one", async () => {
    assert.equal((await sh("printf 'a\\n'")).stdout, "a\n");
    assert.equal((await sh("printf 'a\\r\\n'", { stripFinalNewline: true })).stdout, "a");
    assert.equal((await sh("printf 'a\\n\\n'", { stripFinalNewline: true })).stdout, "a\n");
  });

  it("hands arguments over as they are: no shell reads their metacharacters", async () => {
    const args = ["$(touch /tmp/pwned)", "; rm -rf /", "a b", "`id`", "'\"", "\n", "ü€"];
    const r = await runProcess(
      process.execPath,
      ["-e", "console.log(JSON.stringify(process.argv.slice(1)))", ...args],
      {
        maxBytes: big,
      },
    );
    assert.deepEqual(JSON.parse(r.stdout), args);
  });

  it("uses the environment given as the whole environment", async () => {
    const r = await runProcess("/usr/bin/env", [], { env: { ONLY: "this" }, maxBytes: big });
    assert.equal(r.stdout, "ONLY=this\n");
  });

  it("reports a command that cannot start without throwing", async () => {
    const r = await runProcess("/nonexistent/deploy-agent-no-such-command", [], { maxBytes: big });
    assert.equal(r.exitCode, null);
    assert.match(r.startError ?? "", /ENOENT/);
  });

  it("takes output of exactly the bound and stops the process at one byte more", async () => {
    const at = await sh("head -c 1000 /dev/zero", { maxBytes: { stdout: 1000, stderr: 10 } });
    assert.equal(at.exitCode, 0);
    assert.equal(at.stdout.length, 1000);
    assert.equal(at.overflow, undefined);
    const over = await sh("head -c 1001 /dev/zero; sleep 30", { maxBytes: { stdout: 1000, stderr: 10 } });
    assert.equal(over.overflow, "stdout");
    assert.equal(over.signal, "SIGTERM");
    assert.ok(over.stdout.length <= 1000);
    const endless = await sh("yes >&2", { maxBytes: { stdout: 10, stderr: 4096 } });
    assert.equal(endless.overflow, "stderr");
    assert.ok(endless.stderr.length <= 4096);
  });

  it("ends a process at its timeout, with SIGKILL when it ignores SIGTERM", async () => {
    const t0 = Date.now();
    const r = await sh("trap '' TERM; while :; do sleep 0.05; done", { timeoutMs: 200, graceMs: 300 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, "SIGKILL");
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  it("is cancelled by the signal: before it starts (nothing runs) and while it runs", async () => {
    const before = new AbortController();
    before.abort();
    const marker = `/tmp/deploy-agent-process-test-${process.pid}`;
    const r0 = await sh(`touch ${marker}`, { signal: before.signal });
    assert.equal(r0.canceled, true);
    assert.equal(await import("node:fs").then((fs) => fs.existsSync(marker)), false);
    const during = new AbortController();
    setTimeout(() => during.abort(), 100);
    const r1 = await sh("sleep 30", { signal: during.signal });
    assert.equal(r1.canceled, true);
    assert.equal(r1.signal, "SIGTERM");
  });

  it("stops waiting for a stream a left-behind child holds open when the signal aborts", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const t0 = Date.now();
    // sh exits at once; the sleep it started keeps stdout open for 30 s.
    const r = await sh("sleep 30 & echo started", { signal: ac.signal });
    assert.equal(r.canceled, true);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "started\n");
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  it("survives a command that never reads a large stdin", async () => {
    const r = await sh("exit 0", { input: "x".repeat(4 << 20) });
    assert.equal(r.exitCode, 0);
  });
});

describe("the host command runner (createCommandRunner)", () => {
  const runner = (signal = new AbortController().signal) =>
    createCommandRunner({ dryRun: false, record: () => {}, signal });

  it("takes 16 MiB of output and fails a command that writes one byte more, naming the bound", async () => {
    assert.equal(COMMAND_OUTPUT_MAX_BYTES, 16 * 1024 * 1024);
    const at = await runner()(["head", "-c", String(COMMAND_OUTPUT_MAX_BYTES), "/dev/zero"]);
    assert.equal(at.stdout.length, COMMAND_OUTPUT_MAX_BYTES);
    const err = await runner()(["head", "-c", String(COMMAND_OUTPUT_MAX_BYTES + 1), "/dev/zero"]).catch(
      (e: unknown) => e,
    );
    assert.ok(err instanceof AgentError);
    assert.equal(err.code, "COMMAND_FAILED");
    assert.match(err.message, /^head -c 16777217 \/dev\/zero wrote more than 16777216 bytes to stdout/);
  });

  it("fails a command that exits 0 after its cancellation, and one that cannot start", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const cancelled = await runner(ac.signal)(["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"]).catch(
      (e: unknown) => e,
    );
    assert.ok(cancelled instanceof AgentError);
    assert.match(cancelled.message, /was cancelled/);
    const missing = await runner()(["/nonexistent/deploy-agent-cmd"]).catch((e: unknown) => e);
    assert.ok(missing instanceof AgentError);
    assert.match(
      missing.message,
      /^\/nonexistent\/deploy-agent-cmd failed: spawn \/nonexistent\/deploy-agent-cmd ENOENT/,
    );
  });
});
