import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { readFile, realpath, unlink } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "./atomic-write.js";
import { AgentError } from "./errors.js";
import { stateWriteError } from "./state.js";

/**
 * One run at a time per state directory. Ownership is a Linux abstract Unix socket named after the state
 * directory: binding it is atomic, only one process can hold it, and the kernel frees it the moment its
 * holder dies (kill -9, crash), so there is no stale lock to take over and no takeover race. `deploy.lock`
 * beside the state says who holds it, for the messages; only the holder writes or removes it.
 * The socket lives in the network namespace: every process on the host (the daemon, `deploy-agent run` from
 * a shell or a timer) shares it.
 */

export const LOCK_FILE = "deploy.lock";

/** How long an operator's command (suspend, resume, diff, a host job) waits for a running deploy. */
export const COMMAND_LOCK_WAIT_MS = 60_000;

export interface Lock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  since: string;
}

const names = new Map<string, string>();
async function lockName(stateDir: string): Promise<string> {
  let name = names.get(stateDir);
  if (!name) {
    const dir = await realpath(stateDir);
    name = `\0deploy-agent-lock-${createHash("sha256").update(dir).digest("hex").slice(0, 40)}`;
    names.set(stateDir, name);
  }
  return name;
}

/** Binds the lock's socket; null when another process holds it. */
function bind(name: string): Promise<Server | null> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" ? resolve(null) : reject(err),
    );
    server.listen({ path: name, exclusive: true }, () => {
      server.unref();
      resolve(server);
    });
  });
}

async function holder(file: string): Promise<Holder | null> {
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
  onWait: (holder: Holder) => void = () => {},
): Promise<Lock> {
  const file = path.join(stateDir, LOCK_FILE);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw stateWriteError(file, err);
  }
  const name = await lockName(stateDir);
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const server = await bind(name);
    if (server) {
      const me: Holder = { pid: process.pid, since: new Date().toISOString() };
      try {
        // Who holds the lock, for the operator: the kernel's socket is the lock, so no fsync.
        await writeFileAtomic(file, JSON.stringify(me), { mode: 0o600, durable: false });
      } catch (err) {
        server.close();
        throw stateWriteError(file, err);
      }
      let released = false;
      return {
        async release() {
          if (released) return;
          released = true;
          // The file first, while the socket still excludes everyone: a next holder's file is never removed.
          await unlink(file).catch(() => {});
          await new Promise<void>((done) => server.close(() => done()));
        },
      };
    }
    const owner = (await holder(file)) ?? { pid: 0, since: "unknown" };
    if (Date.now() >= deadline) {
      throw new AgentError(
        "LOCKED",
        `another deploy (pid ${owner.pid || "unknown"}, since ${owner.since}) holds ${file}`,
        { hint: "wait for it to finish, or pass --wait SECONDS" },
      );
    }
    if (!told) {
      onWait(owner);
      told = true;
    }
    await sleep(Math.min(200, Math.max(10, deadline - Date.now())));
  }
}
