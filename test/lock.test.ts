import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { AgentError } from "../src/errors.js";
import { acquireLock, LOCK_FILE } from "../src/lock.js";

const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const lockFile = path.join(dir, LOCK_FILE);
const myStart = () => {
  const stat = readFileSync("/proc/self/stat", "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
};

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

  it("takes over a lock whose holder died", async () => {
    writeFileSync(lockFile, JSON.stringify({ pid: 2 ** 22 + 1, since: "earlier" }));
    const lock = await acquireLock(dir);
    assert.equal(JSON.parse(readFileSync(lockFile, "utf8")).pid, process.pid);
    await lock.release();
  });

  it("takes over a lock whose pid now belongs to another process (pid reuse)", async () => {
    writeFileSync(lockFile, JSON.stringify({ pid: process.pid, start: "1", since: "before a reboot" }));
    const lock = await acquireLock(dir);
    assert.equal(JSON.parse(readFileSync(lockFile, "utf8")).start, myStart());
    await lock.release();
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
