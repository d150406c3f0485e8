import { readdirSync, readFileSync } from "node:fs";

/** Resident memory of a process, in MiB, from /proc. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** The processes pid started that still run (its children), from each of its threads' list in /proc; none once it has exited. */
export function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((t) =>
      readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim().split(" ").filter(Boolean).map(Number),
    );
  } catch {
    return []; // exited meanwhile
  }
}

/** The processes below pid (children, their children, …). */
export function descendants(pid: number): number[] {
  return childrenOf(pid).flatMap((child) => [child, ...descendants(child)]);
}

/**
 * SIGKILL to a process and everything it started, as systemd's stop does to a unit's control group: a
 * daemon's git children would otherwise go on writing into a fixture that is being removed.
 */
export function killTree(pid: number): void {
  const below = descendants(pid);
  for (const p of [pid, ...below]) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
