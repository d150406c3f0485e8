import { type ChildProcess, type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { AgentError } from "../core/errors.js";

/**
 * Git objects through one long-lived `git cat-file --batch`: a push's blob reads, tree walks and
 * the tree diff cost no process spawn (4–5 ms each from a Node process). simple-git has no object reader,
 * so this module talks to git's documented batch protocol itself: write "<object name>\n", read
 * "<oid> <type> <size>\n<size bytes>\n", or "<name> missing\n". git re-reads its pack directory when an
 * object is not found, so objects fetched after the reader started are seen.
 */

/** The largest object read into memory; the config repository holds small text files. */
export const MAX_OBJECT_BYTES = 32 * 1024 * 1024;
/** An answer that takes longer means git is stuck: the reader is killed and started again on next use. */
export const READ_TIMEOUT_MS = 30_000;

/** The last `max` characters a child wrote to stderr (git's verdict is on its last lines), as it goes. */
export function stderrTail(child: { stderr: Readable }, max: number): () => string {
  let tail = "";
  child.stderr.on("data", (d: Buffer) => {
    tail = (tail + d.toString("utf8")).slice(-max);
  });
  return () => tail.trim();
}

/** Whether a child process (and its pipes) keeps this process alive: only while something waits for it. */
export function holdOpen(child: ChildProcess, on: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stderr] as { ref?(): void; unref?(): void }[]) {
    if (on) h?.ref?.();
    else h?.unref?.();
  }
}

export interface GitObject {
  oid: string;
  type: string;
  data: Buffer;
}

export interface ObjectReader {
  /** The object an object name (oid, ref, `rev:path`) names, or null when git has none. */
  read(name: string): Promise<GitObject | null>;
  close(): void;
}

interface Pending {
  name: string;
  resolve(o: GitObject | null): void;
  reject(e: Error): void;
}

export function createObjectReader(
  dir: string,
  env: NodeJS.ProcessEnv,
  { timeoutMs = READ_TIMEOUT_MS } = {},
): ObjectReader {
  let child: ChildProcessWithoutNullStreams | null = null;
  let buffered: Buffer = Buffer.alloc(0);
  let queue: Pending[] = [];
  let timer: NodeJS.Timeout | undefined;

  const fail = (err: Error) => {
    const waiting = queue;
    queue = [];
    clearTimeout(timer);
    child?.kill("SIGKILL");
    child = null;
    buffered = Buffer.alloc(0);
    for (const p of waiting) p.reject(err);
  };

  /** While a read waits, the child keeps the process alive; idle, it must not keep a one-shot command alive. */
  const hold = (on: boolean) => {
    if (child) holdOpen(child, on);
  };

  const arm = () => {
    clearTimeout(timer);
    hold(queue.length > 0);
    if (!queue.length) return;
    timer = setTimeout(
      () => fail(new AgentError("GIT_FAILED", `git cat-file did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref();
  };

  /** Answers every request whose whole answer has arrived. */
  const drain = () => {
    for (;;) {
      const head = queue[0];
      const eol = buffered.indexOf(10);
      if (!head || eol < 0) break;
      const line = buffered.subarray(0, eol).toString("utf8");
      if (line.endsWith(" missing") || line.endsWith(" ambiguous")) {
        buffered = buffered.subarray(eol + 1);
        queue.shift()?.resolve(null);
        continue;
      }
      const [oid = "", type = "", sizeText = ""] = line.split(" ");
      const size = Number(sizeText);
      if (!/^[0-9a-f]{40,64}$/.test(oid) || !Number.isSafeInteger(size)) {
        fail(new AgentError("GIT_FAILED", `git cat-file answered "${line.slice(0, 120)}"`));
        return;
      }
      if (size > MAX_OBJECT_BYTES) {
        fail(
          new AgentError(
            "SOURCE_UNSAFE",
            `${head.name} is ${size} bytes; at most ${MAX_OBJECT_BYTES} are read`,
          ),
        );
        return;
      }
      if (buffered.length < eol + 1 + size + 1) break;
      const data = Buffer.from(buffered.subarray(eol + 1, eol + 1 + size));
      buffered = buffered.subarray(eol + 1 + size + 1);
      queue.shift()?.resolve({ oid, type, data });
    }
    arm();
  };

  const start = (): ChildProcessWithoutNullStreams => {
    const c = spawn("git", ["cat-file", "--batch"], { cwd: dir, env, stdio: ["pipe", "pipe", "pipe"] });
    c.stdout.on("data", (chunk: Buffer) => {
      if (child !== c) return; // what a killed reader still had in the pipe
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      drain();
    });
    const stderr = stderrTail(c, 2000);
    c.on("error", (err) => fail(new AgentError("GIT_FAILED", `git cat-file: ${err.message}`)));
    c.on("exit", (code, signal) => {
      if (child !== c) return;
      fail(new AgentError("GIT_FAILED", `git cat-file exited (${signal ?? code}): ${stderr()}`));
    });
    c.stdin.on("error", () => {}); // reported by "exit"
    return c;
  };

  return {
    read(name) {
      if (/[\n\0]/.test(name))
        return Promise.reject(new AgentError("GIT_FAILED", "object name with newline"));
      child ??= start();
      const c = child;
      return new Promise((resolve, reject) => {
        queue.push({ name, resolve, reject });
        if (queue.length === 1) arm();
        c.stdin.write(`${name}\n`);
      });
    },
    close() {
      const c = child;
      child = null;
      clearTimeout(timer);
      buffered = Buffer.alloc(0);
      // Reads still waiting get an answer: their reader is gone.
      for (const p of queue.splice(0)) p.reject(new AgentError("GIT_FAILED", "the object reader was closed"));
      c?.stdin.end();
    },
  };
}

export interface TreeEntry {
  mode: string;
  /** "blob", "tree" or "commit" (a submodule). */
  type: string;
  oid: string;
}

const TYPE_OF_MODE: Record<string, string> = { "40000": "tree", "160000": "commit" };

/** A tree object's entries in git's order: "<mode> <name>\0<raw oid>" each. */
export function parseTree(data: Buffer, oidBytes = 20): Map<string, TreeEntry> {
  const entries = new Map<string, TreeEntry>();
  for (let i = 0; i < data.length; ) {
    const space = data.indexOf(32, i);
    const nul = data.indexOf(0, space);
    if (space < 0 || nul < 0 || nul + 1 + oidBytes > data.length) {
      throw new AgentError("GIT_FAILED", "malformed tree object");
    }
    const mode = data.subarray(i, space).toString("latin1");
    const name = data.subarray(space + 1, nul).toString("utf8");
    const oid = data.subarray(nul + 1, nul + 1 + oidBytes).toString("hex");
    entries.set(name, { mode: mode === "40000" ? "040000" : mode, type: TYPE_OF_MODE[mode] ?? "blob", oid });
    i = nul + 1 + oidBytes;
  }
  return entries;
}
