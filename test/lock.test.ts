import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { acquireLock, FLOCK_FILE, LOCK_FILE, prepareLock } from "../src/state/lock.js";
import { PROJECT } from "./helpers/agent.js";

const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const lockFile = path.join(dir, LOCK_FILE);
const CHILD = path.join(PROJECT, "test/helpers/lock-child.ts");

function child(stateDir: string, ...args: string[]) {
  const p = spawn(process.execPath, ["--import", "tsx", CHILD, stateDir, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const code = new Promise<number | null>((done) => p.on("exit", (c, signal) => done(signal ? -1 : c)));
  return { p, code };
}

describe("deploy lock", () => {
  it("refuses while a live holder has it, naming the holder", async () => {
    const lock = await acquireLock(dir);
    await assert.rejects(
      acquireLock(dir),
      (e: AgentError) => e.code === "LOCKED" && e.message.includes(`pid ${process.pid}`),
    );
    await lock.release();
    await (await acquireLock(dir)).release();
  });

  it("a holder killed with kill -9 frees it at once; its leftover file is just replaced", async () => {
    const holder = child(dir, "hold");
    await new Promise<void>((done) => holder.p.stdout?.once("data", () => done()));
    await assert.rejects(
      acquireLock(dir),
      (e: AgentError) => e.code === "LOCKED" && e.message.includes(`pid ${holder.p.pid}`),
    );
    holder.p.kill("SIGKILL");
    await holder.code;
    assert.equal(
      JSON.parse(readFileSync(lockFile, "utf8")).pid,
      holder.p.pid,
      "the dead holder's file is still there",
    );
    const lock = await acquireLock(dir);
    assert.equal(JSON.parse(readFileSync(lockFile, "utf8")).pid, process.pid);
    await lock.release();
  });

  it("only the holder releases: a second release() never removes the next holder's lock", async () => {
    const first = await acquireLock(dir);
    await first.release();
    const second = await acquireLock(dir);
    await first.release();
    assert.ok(existsSync(lockFile));
    await assert.rejects(acquireLock(dir), (e: AgentError) => e.code === "LOCKED");
    await second.release();
  });

  it("40 processes racing over a dead holder's lock: never two holders at once", async () => {
    const race = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-race-"));
    try {
      writeFileSync(
        path.join(race, LOCK_FILE),
        JSON.stringify({ pid: 2 ** 22 + 1, since: "before the crash" }),
      );
      const runs = Array.from({ length: 40 }, () => child(race, "15"));
      const codes = await Promise.all(runs.map((r) => r.code));
      assert.deepEqual(
        codes.filter((c) => c !== 0),
        [],
        "exit 3 means a process found another holder inside",
      );
      assert.equal(existsSync(path.join(race, LOCK_FILE)), false, "the last holder released");
    } finally {
      rmSync(race, { recursive: true, force: true });
    }
  });

  it("waits for the holder when asked to, and says so once", async () => {
    const first = await acquireLock(dir);
    const told: number[] = [];
    const second = acquireLock(dir, 5000, (h) => told.push(h.pid));
    setTimeout(() => void first.release(), 300);
    await (await second).release();
    assert.deepEqual(told, [process.pid]);
  });

  it("a holder killed with kill -9 hands the lock to a process already waiting, at once", async () => {
    const holder = child(dir, "hold");
    await new Promise<void>((done) => holder.p.stdout?.once("data", () => done()));
    const waiting = acquireLock(dir, 20_000);
    await new Promise((r) => setTimeout(r, 300));
    const killed = performance.now();
    holder.p.kill("SIGKILL");
    const lock = await waiting;
    const ms = performance.now() - killed;
    console.log(`the waiter had the lock ${ms.toFixed(1)} ms after the kill`);
    assert.ok(ms < 1000, `${ms} ms`);
    assert.equal(JSON.parse(readFileSync(lockFile, "utf8")).pid, process.pid);
    await lock.release();
    await holder.code;
  });

  it("processes contending with seeded random timing never hold it together", async () => {
    const seed = Number(process.env.LOCK_SEED ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`lock contention seed ${seed} (LOCK_SEED=${seed} replays it)`);
    const race = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-seeded-"));
    try {
      const runs = [1, 2, 3].map((i) => child(race, "rounds", "25", String(seed + i)));
      const codes = await Promise.all(runs.map((r) => r.code));
      assert.deepEqual(codes, [0, 0, 0], "exit 3 means a process found another holder inside");
      assert.equal(existsSync(path.join(race, LOCK_FILE)), false, "the last holder released");
    } finally {
      rmSync(race, { recursive: true, force: true });
    }
  });
});

/** The daemon readies its next acquisition after each run (prepareLock): the same lock, fewer forks on the push. */
describe("deploy lock, prepared ahead", () => {
  it("a prepared acquisition holds the lock against others, and releases it", async () => {
    prepareLock(dir);
    const lock = await acquireLock(dir);
    await assert.rejects(acquireLock(dir), (e: AgentError) => e.code === "LOCKED");
    await lock.release();
    await (await acquireLock(dir)).release();
  });

  it("a prepared acquisition finding the lock held waits for it as any other", async () => {
    const first = await acquireLock(dir);
    prepareLock(dir);
    const told: number[] = [];
    const second = acquireLock(dir, 5000, (h) => told.push(h.pid));
    setTimeout(() => void first.release(), 300);
    await (await second).release();
    assert.deepEqual(told, [process.pid]);
  });

  it("a lock file replaced after it was prepared is not used: the new file is the lock", async () => {
    prepareLock(dir);
    rmSync(path.join(dir, FLOCK_FILE));
    const holder = child(dir, "hold");
    await new Promise<void>((done) => holder.p.stdout?.once("data", () => done()));
    await assert.rejects(
      acquireLock(dir),
      (e: AgentError) => e.code === "LOCKED" && e.message.includes(`pid ${holder.p.pid}`),
    );
    holder.p.kill("SIGKILL");
    await holder.code;
  });

  it("a process killed with kill -9 after preparing leaves no process behind and no lock", async () => {
    const preparer = child(dir, "prepare");
    await new Promise<void>((done) => preparer.p.stdout?.once("data", () => done()));
    const children = () =>
      readFileSync(`/proc/${preparer.p.pid}/task/${preparer.p.pid}/children`, "utf8").trim().split(/\s+/);
    const [helper] = children();
    assert.ok(
      helper && readFileSync(`/proc/${helper}/cmdline`, "utf8").includes("flock"),
      "the prepared helper",
    );
    preparer.p.kill("SIGKILL");
    await preparer.code;
    // Gone, or a zombie where no init reaps orphans.
    const alive = () => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${helper}/stat`, "utf8"));
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 500 && alive(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(alive(), false, "the helper read end-of-file and exited");
    await (await acquireLock(dir)).release();
  });
});

/** The lock lives in a file: what could let another process take or swap it is refused, with a hint. */
describe("deploy lock: an unsafe state directory is refused", () => {
  const base = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-unsafe-"));
  after(() => rmSync(base, { recursive: true, force: true }));
  let n = 0;
  /** A fresh state directory (mode 0700) in a directory of its own under base. */
  const fresh = () => {
    const parent = path.join(base, String(++n));
    mkdirSync(path.join(parent, "state"), { recursive: true, mode: 0o700 });
    return { parent, state: path.join(parent, "state") };
  };
  const refused = (pattern: RegExp) => (e: AgentError) => {
    assert.equal(e.code, "STATE_UNSAFE", e.message);
    assert.match(e.message, pattern);
    assert.ok(e.hint, "says what to do");
    return true;
  };

  for (const mode of [0o777, 0o770, 0o702]) {
    it(`a state directory with mode ${mode.toString(8)} (others may write)`, async () => {
      const { state } = fresh();
      chmodSync(state, mode);
      await assert.rejects(
        acquireLock(state),
        refused(/state directory .* can be written by group or others/),
      );
      assert.equal(existsSync(path.join(state, FLOCK_FILE)), false, "nothing was created");
    });
  }

  it("a state directory inside a directory others may write (no sticky bit)", async () => {
    const { parent, state } = fresh();
    chmodSync(parent, 0o777);
    await assert.rejects(acquireLock(state), refused(/\/\d+ can be written by group or others/));
  });

  it("a missing state directory is not even created inside a directory others may write", async () => {
    const { parent } = fresh();
    chmodSync(parent, 0o777);
    const state = path.join(parent, "new", "state");
    await assert.rejects(acquireLock(state), refused(/can be written by group or others/));
    assert.equal(existsSync(path.join(parent, "new")), false);
  });

  it("a lock file that is a symlink is not followed", async () => {
    const { parent, state } = fresh();
    const target = path.join(parent, "elsewhere");
    writeFileSync(target, "not the lock\n", { mode: 0o600 });
    symlinkSync(target, path.join(state, FLOCK_FILE));
    await assert.rejects(acquireLock(state), refused(/is a symlink/));
    assert.equal(readFileSync(target, "utf8"), "not the lock\n");
  });

  for (const mode of [0o644, 0o640, 0o604, 0o660]) {
    it(`a lock file with mode ${mode.toString(8)} (others could open and lock it)`, async () => {
      const { state } = fresh();
      writeFileSync(path.join(state, FLOCK_FILE), "", { mode });
      chmodSync(path.join(state, FLOCK_FILE), mode);
      await assert.rejects(acquireLock(state), refused(/can be opened by group or others/));
    });
  }

  it("a lock file that is not a regular file", async () => {
    const { state } = fresh();
    mkdirSync(path.join(state, FLOCK_FILE), { mode: 0o700 });
    await assert.rejects(acquireLock(state), (e: AgentError) => e.code === "STATE_UNSAFE");
  });

  it("still takes the lock where others may only look: a 0755 state directory, a sticky 1777 parent, a symlink of ours", async () => {
    const { parent, state } = fresh();
    chmodSync(state, 0o755);
    chmodSync(parent, 0o1777);
    await (await acquireLock(state)).release();
    const link = path.join(base, `link-${n}`);
    symlinkSync(state, link);
    await (await acquireLock(link)).release();
  });
});
