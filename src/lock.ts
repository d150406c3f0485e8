import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError } from "./errors.js";

/**
 * One run at a time per state directory. The lock file holds the owner's pid; a lock whose pid no longer
 * exists (the holder was killed) is taken over, so a crash never wedges the host.
 */

export const LOCK_FILE = "deploy.lock";

export interface Lock {
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function holder(file: string): Promise<{ pid: number; since: string } | null> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as { pid?: unknown; since?: unknown };
    return typeof parsed.pid === "number" ? { pid: parsed.pid, since: String(parsed.since) } : null;
  } catch {
    return null;
  }
}

export async function acquireLock(
  stateDir: string,
  waitMs = 0,
  onWait: (holder: { pid: number; since: string }) => void = () => {},
): Promise<Lock> {
  let told = false;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, LOCK_FILE);
  const deadline = Date.now() + waitMs;
  for (;;) {
    // Write the owner record first, then link it into place: the lock never exists without its content.
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    await writeFile(tmp, JSON.stringify({ pid: process.pid, since: new Date().toISOString() }), {
      mode: 0o600,
    });
    try {
      await link(tmp, file);
      return { release: () => unlink(file).catch(() => {}) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    const owner = await holder(file);
    if (owner === null || !alive(owner.pid)) {
      // The holder died without releasing (kill -9, power loss): take the lock over.
      await unlink(file).catch(() => {});
      continue;
    }
    if (Date.now() >= deadline) {
      throw new AgentError(
        "LOCKED",
        `another deploy (pid ${owner.pid}, since ${owner.since}) holds ${file}`,
        {
          hint: "wait for it to finish, or pass --wait SECONDS",
        },
      );
    }
    if (!told) {
      onWait(owner);
      told = true;
    }
    await sleep(Math.min(200, Math.max(10, deadline - Date.now())));
  }
}
