import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { AgentError } from "../src/errors.js";
import { acquireLock, LOCK_FILE } from "../src/lock.js";
import { PROJECT } from "./helpers/agent.js";

const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const lockFile = path.join(dir, LOCK_FILE);
const CHILD = path.join(PROJECT, "test/helpers/lock-child.ts");

function child(stateDir: string, stay: string) {
  const p = spawn(process.execPath, ["--import", "tsx", CHILD, stateDir, stay], {
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
});
