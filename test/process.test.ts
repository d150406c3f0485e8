import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { getEventListeners, once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { AgentError } from "../src/core/errors.js";
import { COMMAND_OUTPUT_MAX_BYTES, createCommandRunner } from "../src/host/command.js";
import { runProcess, STREAMS_AFTER_EXIT_MS } from "../src/host/process.js";

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

  it("starts a process before its input is known; the timeout counts from when the input is written", async () => {
    const max = { stdout: 1024, stderr: 1024 };
    const later = (ms: number, text: string) => new Promise<string>((r) => setTimeout(() => r(text), ms));
    // 600 ms to the input, 400 ms bound: within it from the write, past it from the start.
    const fed = await runProcess("cat", [], { input: later(600, "late"), timeoutMs: 400, maxBytes: max });
    assert.deepEqual([fed.exitCode, fed.timedOut, fed.stdout], [0, false, "late"]);
    // After the write the bound holds: a process that then hangs is ended at it.
    const started = Date.now();
    const hung = await runProcess("sh", ["-c", "read -r x; sleep 30"], {
      input: later(300, "go\n"),
      timeoutMs: 300,
      maxBytes: max,
      graceMs: 100,
    });
    assert.equal(hung.timedOut, true);
    assert.ok(Date.now() - started < 5000, `ended after ${Date.now() - started} ms`);
    // A rejected input is an empty one.
    const none = await runProcess("cat", [], { input: Promise.reject(new Error("no")), maxBytes: max });
    assert.deepEqual([none.exitCode, none.stdout], [0, ""]);
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

  it("keeps the last `tail` characters of a failed command's output: all of them at the bound, none at 0", async () => {
    const fail = (tail: number | undefined) =>
      runner()(["sh", "-c", "printf 'head-%0596d-tail' 0; exit 3"], tail === undefined ? {} : { tail }).then(
        () => assert.fail("the command succeeded"),
        (e: unknown) => e as AgentError,
      );
    const output = (e: AgentError) => e.message.replace(/^.*? exited with code 3: /s, "");
    // 606 characters of output; the default keeps 600.
    assert.equal(output(await fail(606)).length, 606);
    assert.equal(output(await fail(undefined)), `…${"0".repeat(595)}-tail`);
    assert.equal(output(await fail(5)), "…-tail");
    const none = await fail(0);
    assert.match(none.message, /exited with code 3$/);
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

describe("runProcess under attack", () => {
  it("resolves with the reason, never rejects, when node refuses an argument or the environment", async () => {
    const arg = await sh("echo a\0b");
    assert.equal(arg.exitCode, null);
    assert.match(arg.startError ?? "", /args\[1\].* null bytes/);
    const env = await runProcess("/bin/true", [], { env: { KEY: "hunter2-\0-secret" }, maxBytes: big });
    assert.match(env.startError ?? "", /null bytes/);
    // Node's message quotes the value it refused; an environment value may be a secret.
    assert.doesNotMatch(env.startError ?? "", /hunter2/);
  });

  it("survives running out of file descriptors: the spawn's EMFILE is a result, not a crash", async () => {
    const script = `
      const fs = await import("node:fs");
      const { runProcess } = await import(${JSON.stringify(path.resolve("src/host/process.ts"))});
      const fds = [];
      try { for (;;) fds.push(fs.openSync("/dev/null", "r")); } catch {}
      fs.closeSync(fds.pop());
      const r = await runProcess("/bin/true", [], { maxBytes: { stdout: 10, stderr: 10 } });
      for (const fd of fds) fs.closeSync(fd);
      await new Promise((ok) => setTimeout(ok, 100));
      console.log(JSON.stringify(r));`;
    const { stdout } = await promisify(execFile)(
      "sh",
      ["-c", 'ulimit -n 64 && exec "$0" --import tsx --input-type=module -e "$1"', process.execPath, script],
      { timeout: 20_000 },
    );
    const r = JSON.parse(stdout);
    assert.equal(r.exitCode, null);
    assert.match(r.startError, /EMFILE/);
  });

  it("signals no one when cancelled before node reports that the command could not start", async () => {
    // A child that never started has no pid, and node's kill() then signals the caller's own process
    // group (kill(0, …)): run in a group of its own, so that the test runner is not in it.
    const script = `
      const { runProcess } = await import(${JSON.stringify(path.resolve("src/host/process.ts"))});
      let signalled = false;
      process.on("SIGTERM", () => { signalled = true; });
      const ac = new AbortController();
      const run = runProcess("/nonexistent/deploy-agent-no-such-command", [], { signal: ac.signal, maxBytes: { stdout: 10, stderr: 10 } });
      ac.abort();
      const r = await run;
      await new Promise((ok) => setTimeout(ok, 200));
      console.log(JSON.stringify({ signalled, startError: r.startError }));`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 20_000,
    });
    let out = "";
    child.stdout.on("data", (c) => {
      out += c;
    });
    await once(child, "close");
    assert.deepEqual(JSON.parse(out), {
      signalled: false,
      startError: "spawn /nonexistent/deploy-agent-no-such-command ENOENT",
    });
  });

  it("reports a file it may not execute, and names a working directory that does not exist", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "deploy-agent-process-"));
    const script = path.join(dir, "not-executable.sh");
    fs.writeFileSync(script, "#!/bin/sh\necho ran\n", { mode: 0o644 });
    const r = await runProcess(script, [], { maxBytes: big, input: "x".repeat(1 << 20) });
    assert.equal(r.exitCode, null);
    assert.match(r.startError ?? "", /EACCES/);
    const cwd = path.join(dir, "gone");
    const c = await runProcess("/bin/true", [], { cwd, maxBytes: big });
    assert.equal(c.exitCode, null);
    // Not only "spawn /bin/true ENOENT", which sends one looking for /bin/true.
    assert.ok(c.startError?.includes(cwd), c.startError);
    fs.rmSync(dir, { recursive: true });
  });

  it("counts a process that exits 0 on SIGTERM as timed out or over its bound", async () => {
    const polite = "trap 'exit 0' TERM; while :; do sleep 0.05; done";
    const t = await sh(polite, { timeoutMs: 200 });
    assert.equal(t.exitCode, 0);
    assert.equal(t.timedOut, true);
    const o = await sh(`trap 'exit 0' TERM; head -c 2000 /dev/zero; ${polite}`, {
      maxBytes: { stdout: 1000, stderr: 10 },
    });
    assert.equal(o.exitCode, 0);
    assert.equal(o.overflow, "stdout");
  });

  it("stops waiting for a stream a left-behind child holds at the timeout and at the bound", async () => {
    const t0 = Date.now();
    const t = await sh("sleep 30 & echo started", { timeoutMs: 200 });
    assert.equal(t.timedOut, true);
    assert.equal(t.stdout, "started\n");
    const o = await sh("(sleep 0.3; head -c 2000 /dev/zero; sleep 30) & echo started", {
      maxBytes: { stdout: 1000, stderr: 10 },
    });
    assert.equal(o.exitCode, 0);
    assert.equal(o.overflow, "stdout");
    const e = await sh("(sleep 30 >/dev/null) 2>&1 & echo started", { timeoutMs: 200 });
    assert.equal(e.timedOut, true);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  it("ends a command that started a daemon holding its stdout, with no timeout or signal, soon after its exit", async () => {
    const t0 = Date.now();
    // The daemon writes once just within the wait after the exit (kept), then holds stdout for 30 s.
    const late = (STREAMS_AFTER_EXIT_MS / 2000).toFixed(1);
    const r = await sh(`(sleep ${late}; echo daemon; exec sleep 30) & echo started`);
    const took = Date.now() - t0;
    assert.equal(r.exitCode, 0);
    assert.equal(r.timedOut || r.canceled, false);
    assert.equal(r.stdout, "started\ndaemon\n");
    assert.ok(took >= STREAMS_AFTER_EXIT_MS - 50 && took < STREAMS_AFTER_EXIT_MS + 3000, `took ${took} ms`);
  });

  it("takes stderr of exactly its bound and stops at one byte more", async () => {
    const at = await sh("head -c 1000 /dev/zero >&2", { maxBytes: { stdout: 10, stderr: 1000 } });
    assert.equal(at.overflow, undefined);
    assert.equal(at.exitCode, 0);
    assert.equal(at.stderr.length, 1000);
    const over = await sh("head -c 1001 /dev/zero >&2", { maxBytes: { stdout: 10, stderr: 1000 } });
    assert.equal(over.overflow, "stderr");
  });

  it("decodes a character whose bytes arrive in separate chunks", async () => {
    const r = await sh(
      "printf '\\342'; sleep 0.1; printf '\\202\\254'; printf '\\360\\237' >&2; sleep 0.1; printf '\\230\\200' >&2",
    );
    assert.equal(r.stdout, "€");
    assert.equal(r.stderr, "😀");
    assert.equal(r.all, "€😀");
  });

  it("survives a command that closes its stdin and goes on running", async () => {
    const r = await sh("exec 0<&-; sleep 0.2; echo ok", { input: "x".repeat(4 << 20) });
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "ok\n");
  });

  it("leaves no listener on a signal that outlives a thousand runs, whatever their end", async () => {
    const ac = new AbortController();
    const o = { signal: ac.signal, maxBytes: { stdout: 4, stderr: 4 } };
    for (let i = 0; i < 250; i++) {
      await runProcess("/bin/true", [], o);
      await runProcess("/nonexistent/deploy-agent-no-such-command", [], o);
      await runProcess("/bin/true", ["\0"], o);
      await runProcess("/bin/echo", ["hello"], o);
    }
    assert.equal(getEventListeners(ac.signal, "abort").length, 0);
  });

  it("settles an abort that races the process's own exit, and leaves no zombie", async () => {
    for (let delay = 0; delay < 20; delay += 2) {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), delay);
      const r = await sh("echo $$", { signal: ac.signal });
      assert.ok(r.canceled || r.exitCode === 0, JSON.stringify(r));
      assert.equal(getEventListeners(ac.signal, "abort").length, 0);
    }
    const k = await sh("echo $$; trap '' TERM; while :; do sleep 0.05; done", {
      timeoutMs: 100,
      graceMs: 100,
    });
    assert.equal(k.signal, "SIGKILL");
    assert.equal(fs.existsSync(`/proc/${k.stdout.trim()}`), false);
  });
});

describe("the command runner under attack", () => {
  const runner = (signal = new AbortController().signal) =>
    createCommandRunner({ dryRun: false, record: () => {}, signal });
  const failure = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => assert.fail("the command succeeded"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof AgentError, `not an AgentError: ${String(err)}`);
    assert.equal(err.code, "COMMAND_FAILED");
    return err.message;
  };

  it("fails with COMMAND_FAILED, not a crash, for an argument or env value node refuses", async () => {
    const run = runner();
    assert.match(await failure(run(["sh", "-c", "echo a\0b"])), /^sh -c echo a.b failed: .*null bytes/);
    const env = await failure(run(["/bin/true"], { env: { NODE_OPTIONS: "--x=hunter2\0" } }));
    assert.doesNotMatch(env, /hunter2/);
  });

  it("fails a command that exits 0 on SIGTERM once cancelled or over its output bound", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const polite = "trap 'exit 0' TERM; while :; do sleep 0.05; done";
    assert.match(await failure(runner(ac.signal)(["sh", "-c", polite])), /was cancelled/);
    assert.match(
      await failure(runner()(["sh", "-c", `head -c ${COMMAND_OUTPUT_MAX_BYTES + 1} /dev/zero; ${polite}`])),
      new RegExp(`wrote more than ${COMMAND_OUTPUT_MAX_BYTES} bytes to stdout`),
    );
  });

  it("hands an env value with newlines, = and shell metacharacters over intact", async () => {
    const value = "a\nb=c; $(touch /tmp/pwned) `id` 'q\" \\ ü€";
    const r = await runner()([process.execPath, "-e", "process.stdout.write(process.env.ODD)"], {
      env: { ODD: value },
    });
    assert.equal(r.stdout, value);
  });
});
