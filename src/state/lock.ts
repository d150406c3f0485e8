import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  type Stats,
  unlinkSync,
} from "node:fs";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { stateWriteError } from "./state.js";

/**
 * One run at a time per state directory. The lock is a flock(2) on `deploy.flock` in the state directory,
 * which only its owner can enter or write: no other user can open the file, so none can take or block the
 * lock. Node has no flock call, so util-linux's `flock` locks the descriptor Node opened and passed to it;
 * flock locks belong to the open file description, so the lock stays with Node's descriptor after `flock`
 * exits, and the kernel frees it the moment that descriptor closes: at release, or when the holder dies
 * (kill -9, OOM). No stale lock, no takeover race. `deploy.flock` is never removed (a removed lock file lets
 * a waiter and a newcomer lock two different files). `deploy.lock` beside it says who holds the lock, for
 * the messages; only the holder writes or removes it, and removes it before it lets the lock go.
 * Before the lock is taken, every directory on the way to the state directory is checked: owned by root or
 * by this process's user, writable by nobody else (unless sticky, as /tmp), the state directory itself ours
 * and writable by us alone; anything else is STATE_UNSAFE, refused before anything is done.
 */

export const LOCK_FILE = "deploy.lock";
export const FLOCK_FILE = "deploy.flock";

/** How long an operator's command (suspend, resume, diff, a host job) waits for a running deploy. */
export const COMMAND_LOCK_WAIT_MS = 60_000;

export interface Lock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  since: string;
}

/** flock's exit status when another open file holds the lock (its -E). */
const BUSY = 75;
const euid = () => process.geteuid?.() ?? 0;
/** The sticky bit: only an entry's owner may rename or remove it (as in /tmp). */
const STICKY = 0o1000;
const mode = (st: Stats) => (st.mode & 0o7777).toString(8).padStart(4, "0");
const MOVE_IT =
  "keep the state directory where only root (or the agent's user) can change the path to it, as /var/lib/deploy-agent";

function unsafe(message: string, hint: string): AgentError {
  return new AgentError("STATE_UNSAFE", message, { hint });
}

/** A directory on the way to the state directory: nobody but root or us may change what it holds. */
function checkOnTheWay(dir: string, st: Stats): void {
  if (st.uid !== 0 && st.uid !== euid())
    throw unsafe(`${dir} is owned by uid ${st.uid}: that user could replace the state directory`, MOVE_IT);
  if (st.mode & 0o022 && !(st.mode & STICKY))
    throw unsafe(
      `${dir} can be written by group or others (mode ${mode(st)}, no sticky bit): they could replace the state directory`,
      MOVE_IT,
    );
}

/**
 * Follows the path as the kernel does, checking every directory it passes through and every symlink on
 * the way; returns the real path and its stat. Throws ENOENT at the first missing part, after checking
 * everything before it.
 */
function walk(target: string): { real: string; st: Stats } {
  const todo = path.resolve(target).split("/").filter(Boolean).reverse();
  let real = "/";
  for (let links = 0; todo.length; ) {
    const part = todo.pop() ?? "";
    if (part === "." || part === "..") {
      real = part === ".." ? path.dirname(real) : real;
      continue;
    }
    checkOnTheWay(real, lstatSync(real));
    const next = path.join(real, part);
    const st = lstatSync(next);
    if (st.isSymbolicLink()) {
      if (st.uid !== 0 && st.uid !== euid())
        throw unsafe(
          `symlink ${next} is owned by uid ${st.uid}: that user could point it elsewhere`,
          MOVE_IT,
        );
      if (++links > 40) throw unsafe(`${target}: too many symlinks`, MOVE_IT);
      const to = readlinkSync(next);
      if (path.isAbsolute(to)) real = "/";
      todo.push(...to.split("/").filter(Boolean).reverse());
      continue;
    }
    real = next;
  }
  return { real, st: lstatSync(real) };
}

/** Makes the state directory if missing (never inside an unsafe one) and checks it is ours alone. */
function safeStateDir(stateDir: string, file: string): void {
  let found: { real: string; st: Stats };
  try {
    found = walk(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw stateWriteError(file, e);
    }
    found = walk(stateDir);
  }
  const { real, st } = found;
  const fix = `a state directory must be the agent's alone: check what is in ${real}, then chown ${euid()} ${real} and chmod 0700 ${real} (or remove it and let the agent make it)`;
  if (!st.isDirectory()) throw unsafe(`state directory ${real} is not a directory`, fix);
  if (st.uid !== euid())
    throw unsafe(
      `state directory ${real} is owned by uid ${st.uid}, not by this process's uid ${euid()}`,
      fix,
    );
  if (st.mode & 0o022)
    throw unsafe(`state directory ${real} can be written by group or others (mode ${mode(st)})`, fix);
}

/** Opens the lock file without following a symlink, and checks no one else could open it. */
function openLockFile(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ELOOP")
      throw unsafe(`${file} is a symlink`, "remove it; the agent makes its lock file itself");
    if (code === "EISDIR")
      throw unsafe(`${file} is not a regular file`, "remove it; the agent makes its lock file itself");
    throw stateWriteError(file, err);
  }
  try {
    checkLockFile(file, fstatSync(fd));
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}

function checkLockFile(file: string, st: Stats): void {
  const problem = !st.isFile()
    ? "is not a regular file"
    : st.uid !== euid()
      ? `is owned by uid ${st.uid}, not by this process's uid ${euid()}`
      : st.mode & 0o077
        ? `can be opened by group or others (mode ${mode(st)}): they could hold the lock`
        : null;
  if (problem)
    throw unsafe(
      `${file} ${problem}`,
      "remove it while no deploy runs; the agent makes it again with mode 0600",
    );
}

const flockEnv = () => ({ PATH: process.env.PATH ?? "/usr/bin:/bin" });

/** What a flock(1) process ended with: true when it took the lock, false when another open file holds it. */
function flockResult(child: ChildProcess): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let stderr = "";
    child.stderr?.on("data", (d) => {
      if (stderr.length < 1000) stderr += d;
    });
    const failed = (why: string) =>
      new AgentError("LOCK_FAILED", `flock(1) could not lock ${FLOCK_FILE}: ${why}`, {
        hint: "the deploy lock needs util-linux's flock (apt-get install util-linux)",
      });
    child.once("error", (err) => reject(failed(err.message)));
    child.once("close", (code, signal) => {
      if (code === 0) resolve(true);
      else if (code === BUSY) resolve(false);
      else reject(failed(`exit ${code ?? signal}${stderr ? `: ${stderr.trim()}` : ""}`));
    });
  });
}

/** flock(1) on fd, passed as its fd 3. */
function flock(fd: number, args: string[]): Promise<boolean> {
  const child = spawn("flock", [...args, "-E", String(BUSY), "3"], {
    stdio: ["ignore", "ignore", "pipe", fd],
    env: flockEnv(),
  });
  return flockResult(child);
}

/**
 * A lock file opened and a process forked ahead of the next acquisition (the daemon's next push): forking
 * the daemon costs milliseconds of blocked event loop, spent after a run instead of before one. The shell
 * waits for a line and then becomes `flock -n` on the descriptor; if this process dies first, it reads
 * end-of-file and exits without locking anything.
 */
interface Prepared {
  fd: number;
  child: ChildProcess;
  result: Promise<boolean>;
}
const prepared = new Map<string, Prepared>();

function discard(p: Prepared): void {
  p.child.kill();
  closeSync(p.fd);
}

/** Readies the next acquireLock(stateDir) off the hot path; anything wrong is left for it to report. */
export function prepareLock(stateDir: string): void {
  if (prepared.has(stateDir)) return;
  let fd: number;
  try {
    safeStateDir(stateDir, path.join(stateDir, LOCK_FILE));
    fd = openLockFile(path.join(stateDir, FLOCK_FILE));
  } catch {
    return;
  }
  const child = spawn("sh", ["-c", `read -r go && exec flock -n -E ${BUSY} 3`], {
    stdio: ["pipe", "ignore", "pipe", fd],
    env: flockEnv(),
  });
  const result = flockResult(child);
  result.catch(() => {});
  child.stdin?.on("error", () => {});
  // Neither the waiting shell nor its pipes keep the process alive.
  child.unref();
  for (const stream of [child.stdin, child.stderr])
    (stream as unknown as { unref?(): void } | null)?.unref?.();
  const p = { fd, child, result };
  prepared.set(stateDir, p);
  child.once("exit", () => {
    if (prepared.get(stateDir) === p) {
      prepared.delete(stateDir);
      closeSync(fd);
    }
  });
}

/** The prepared descriptor and process, if still usable for the lock file there now. */
function takePrepared(stateDir: string, file: string): Prepared | null {
  const p = prepared.get(stateDir);
  if (!p) return null;
  prepared.delete(stateDir);
  try {
    const now = lstatSync(file);
    const had = fstatSync(p.fd);
    checkLockFile(file, had);
    if (p.child.exitCode === null && now.ino === had.ino && now.dev === had.dev) return p;
  } catch {}
  discard(p);
  return null;
}

function holder(file: string): Holder | null {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as { pid?: unknown; since?: unknown };
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
  safeStateDir(stateDir, file);
  const flockFile = path.join(stateDir, FLOCK_FILE);
  const ready = takePrepared(stateDir, flockFile);
  const fd = ready?.fd ?? openLockFile(flockFile);
  const deadline = Date.now() + waitMs;
  try {
    ready?.child.ref();
    ready?.child.stdin?.end("go\n");
    // A prepared process that died meanwhile took no lock: the descriptor is still good for flock itself.
    let held = await (ready ? ready.result.catch(() => flock(fd, ["-n"])) : flock(fd, ["-n"]));
    if (!held && waitMs > 0) {
      onWait(holder(file) ?? { pid: 0, since: "unknown" });
      const left = deadline - Date.now();
      // flock blocks in the kernel, so the lock passes to us the moment its holder lets go.
      if (left > 0) held = await flock(fd, ["-w", (left / 1000).toFixed(3)]);
    }
    if (!held) {
      const owner = holder(file) ?? { pid: 0, since: "unknown" };
      throw new AgentError(
        "LOCKED",
        `another deploy (pid ${owner.pid || "unknown"}, since ${owner.since}) holds ${file}`,
        { hint: "wait for it to finish, or pass --wait SECONDS" },
      );
    }
    const me: Holder = { pid: process.pid, since: new Date().toISOString() };
    try {
      // Who holds the lock, for the operator: the kernel's flock is the lock, so no fsync.
      await writeFileAtomic(file, JSON.stringify(me), { mode: 0o600, durable: false });
    } catch (err) {
      throw stateWriteError(file, err);
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      // The record first, while the lock still excludes everyone: a next holder's record is never removed.
      try {
        unlinkSync(file);
      } catch {}
      closeSync(fd);
    },
  };
}
