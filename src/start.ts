#!/usr/bin/env -S node --
// The executable as built (dist/src/bin.js): npm links it into PATH (node_modules/.bin, npm i -g) and
// `deploy-agent install` links it to /usr/local/bin. The `--` in the shebang ends Node's own options: Node 20
// otherwise reads a `--env-file` meant for deploy-agent, loads that file itself and exits 9 when it is missing.
//
// It compiles the bundled agent (dist/src/agent.cjs, from src/bin.ts) and runs it. Under its unit the daemon
// has a cache directory (systemd's CacheDirectory=, given as $CACHE_DIRECTORY): there V8's code cache of the
// agent is kept, so that a restart skips parsing and compiling the 1.5 MB bundle (about 65 ms of the
// start-up). Node 22 does the same with module.enableCompileCache(); Node 20 offers it only for scripts
// (node:vm), hence a CommonJS bundle. Without the variable (an operator's command, the tests) nothing is
// read or written.
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Script } from "node:vm";

/** How long after the start the cache is written: the start-up's functions are compiled by then. */
const WRITE_AFTER_MS = 10_000;
/** Larger than any cache of this bundle (about 2 MB); a larger file is not read. */
const CACHE_MAX_BYTES = 64 * 1024 * 1024;
/** The cache files and their temporary files: only these are ever removed from the directory. */
const OURS = /^agent-[0-9a-f]{16}\.v8cache(\.\d+\.tmp)?$/;

/** What became of the cache, for the daemon's "listening" line. */
type CodeCache = "off" | "absent" | "used" | "rejected" | "untrusted";
const STATE = Symbol.for("deploy-agent.code-cache");

const agent = path.join(path.dirname(fileURLToPath(import.meta.url)), "agent.cjs");

/**
 * Only a file and directory this process's user owns and nobody else can write are trusted: a cache is code
 * the process runs (V8 checks its version, flags and the source's length, not who wrote it).
 */
const trusted = (st: { uid: number; mode: number }) =>
  st.uid === process.getuid?.() && (st.mode & 0o022) === 0;

/**
 * The cache file for this bundle, this Node and these flags (they decide whether V8 accepts it). The
 * bundle's content, not its size and times: V8 checks only the source's length, and runs the cached code of
 * another bundle of that length (a one-character fix, a copy keeping the mtime: npm sets every file's to
 * 1985). Hashing its bytes takes about 1 ms (its decoded text joined to the rest: 6 to 12 ms).
 */
function cacheFile(dir: string, bundle: Buffer): string {
  const key = createHash("sha256")
    .update(
      [process.version, process.arch, process.execArgv, process.env.NODE_OPTIONS].map(String).join("\0"),
    )
    .update(bundle)
    .digest("hex")
    .slice(0, 16);
  return path.join(dir, `agent-${key}.v8cache`);
}

function readCache(file: string): Buffer | "absent" | "untrusted" {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO in its place would block the start until someone writes to it.
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "absent" : "untrusted";
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || !trusted(st) || st.size > CACHE_MAX_BYTES) return "untrusted";
    return readFileSync(fd);
  } catch {
    // A read that fails (EIO) costs the cache, never the start.
    return "untrusted";
  } finally {
    closeSync(fd);
  }
}

/** Writes the cache whole (a temporary file renamed over it) and removes those of other bundles or flags. */
function writeCache(file: string, data: Buffer): void {
  const dir = path.dirname(file);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    // One a daemon of this pid left when it was killed writing (a container's boot gives the same pids).
    rmSync(tmp, { force: true });
    writeFileSync(tmp, data, { mode: 0o600, flag: "wx" });
    renameSync(tmp, file);
    for (const name of readdirSync(dir)) {
      if (OURS.test(name) && name !== path.basename(file)) rmSync(path.join(dir, name), { force: true });
    }
  } catch {
    // The cache is optional: a failed write waits for the next start and never stops this daemon.
    try {
      rmSync(tmp, { force: true });
    } catch {}
  }
}

/** The directory's status: a cache is optional, so no error here stops the start. */
function statDir(dir: string): Stats | "off" | "untrusted" {
  try {
    return statSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ENOTDIR" ? "off" : "untrusted";
  }
}

function start(): void {
  // systemd gives a list when a unit names several directories; the first is the agent's.
  const dir = process.env.CACHE_DIRECTORY?.split(":")[0];
  const bundle = readFileSync(agent);
  let state: CodeCache = "off";
  let file: string | undefined;
  let cachedData: Buffer | undefined;
  const st = dir ? statDir(dir) : "off";
  if (typeof st === "string") state = st;
  else if (dir && st.isDirectory() && trusted(st)) {
    file = cacheFile(dir, bundle);
    const read = readCache(file);
    if (typeof read === "string") state = read;
    else cachedData = read;
  } else {
    state = "untrusted";
  }
  // The file is the module already wrapped in CommonJS's function (build.mjs): its text is the script.
  const script = new Script(bundle.toString("utf8"), { filename: agent, cachedData });
  if (cachedData) state = script.cachedDataRejected ? "rejected" : "used";
  (globalThis as Record<symbol, unknown>)[STATE] = state;
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  const module = { exports: {} };
  run.call(module.exports, module.exports, createRequire(agent), module, agent, path.dirname(agent));
  // A file the directory's owner left untrusted is replaced: the rename swaps the name, never follows it.
  if (file && state !== "used") {
    const to = file;
    setTimeout(() => writeCache(to, script.createCachedData()), WRITE_AFTER_MS).unref();
  }
}

start();
