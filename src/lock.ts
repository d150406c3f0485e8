import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError } from "./errors.js";

/**
 * One run at a time per state directory. The lock file holds the owner's pid and that process's start time;
 * a lock whose process no longer exists (the holder was killed) is taken over, so a crash never wedges the
 * host. The start time guards against pid reuse: with pid_max 32768 and git spawned for every step, a dead
 * holder's pid soon belongs to some other process.
 */

export const LOCK_FILE = "deploy.lock";

export interface Lock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); absent where /proc is not readable. */
  start?: string | undefined;
  since: string;
}

async function startTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // The command name (field 2) may hold spaces and parentheses: count fields after its closing ")".
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}

async function alive(owner: Holder): Promise<boolean> {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  return owner.start === undefined || (await startTime(owner.pid)) === owner.start;
}

async function holder(file: string): Promise<Holder | null> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as {
      pid?: unknown;
      start?: unknown;
      since?: unknown;
    };
    if (typeof parsed.pid !== "number") return null;
    return {
      pid: parsed.pid,
      start: typeof parsed.start === "string" ? parsed.start : undefined,
      since: String(parsed.since),
    };
  } catch {
    return null;
  }
}

export async function acquireLock(
  stateDir: string,
  waitMs = 0,
  onWait: (holder: Holder) => void = () => {},
): Promise<Lock> {
  let told = false;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, LOCK_FILE);
  const deadline = Date.now() + waitMs;
  const me = { pid: process.pid, start: await startTime(process.pid), since: new Date().toISOString() };
  for (;;) {
    // Write the owner record first, then link it into place: the lock never exists without its content.
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    await writeFile(tmp, JSON.stringify(me), {
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
    if (owner === null || !(await alive(owner))) {
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
