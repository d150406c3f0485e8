import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { lstat, mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * What a plan's tool checks share: the check's shape, the tools found on this machine, and running one of
 * them on a copy in a scratch directory (never a host path), with a timeout, as an unprivileged user where
 * the plan runs as root.
 */

/** One check of a host's plan: a tool's verdict here, the step kinds' own checks in plan-host. */
export interface PlanCheck {
  name: string;
  /** The repository file it is about. */
  file: string;
  result: "passed" | "failed" | "skipped";
  message: string;
}

export interface HostTools {
  systemdAnalyze: string | null;
  nginx: string | null;
  /** The distribution's units, copied into the scratch root for a unit's dependencies. */
  unitsDir: string;
  /** Longest one tool run may take before it is killed and its check fails. */
  timeoutMs: number;
}

/** The kernel's "nobody" (overflowuid/gid), as whom root runs nginx; null when not root. */
export function unprivileged(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const read = (name: string) => {
    try {
      return Number.parseInt(readFileSync(`/proc/sys/kernel/${name}`, "utf8"), 10) || 65534;
    } catch {
      return 65534;
    }
  };
  return { uid: read("overflowuid"), gid: read("overflowgid") };
}

interface ToolRun {
  code: number | null;
  output: string;
  timedOut: boolean;
}

export function runTool(
  file: string,
  args: string[],
  timeoutMs: number,
  as?: { uid: number; gid: number } | null,
  cwd?: string,
): Promise<ToolRun> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        // libuv drops the supplementary groups with the uid.
        ...(as ?? {}),
        cwd,
        timeout: timeoutMs,
        killSignal: "SIGKILL",
        maxBuffer: 1024 * 1024,
        env: { PATH: process.env.PATH ?? "", LC_ALL: "C" },
      },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
        resolve({
          code: e ? (typeof e.code === "number" ? e.code : null) : 0,
          output: `${stderr}${stdout}`.trim(),
          timedOut: !!e?.killed,
        });
      },
    );
  });
}

/** The end of a tool's output, where its verdict is. */
export const tail = (text: string, max = 600) => (text.length > max ? `…${text.slice(-max)}` : text);

/** A scratch directory for one check, removed after it. */
export async function scratch<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), "deploy-agent-plan-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Writes a file under the scratch root and never through a link: each directory on the way is made or must
 * be a real one, and whatever is at the name (the distribution's copied aliases and masked units are links)
 * is removed first. The name and the path come from the repository.
 */
export async function writeInside(
  root: string,
  file: string,
  data: Buffer | string,
  mode: number,
  owner?: { uid: number; gid: number },
): Promise<void> {
  const parts = path.relative(root, file).split(path.sep);
  if (parts[0] === ".." || path.isAbsolute(parts[0] ?? ""))
    throw new Error(`${file} is outside the scratch root`);
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    dir = path.join(dir, part);
    const st = await lstat(dir).catch(() => null);
    if (!st) await mkdir(dir);
    else if (!st.isDirectory())
      throw new Error(`/${path.relative(root, dir)} is a link or a file, not a directory`);
  }
  await rm(file, { force: true });
  const handle = await open(file, "wx", mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode);
    if (owner) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}
