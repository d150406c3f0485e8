import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import Module from "node:module";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Script } from "node:vm";
import {
  BUILT_BIN,
  hostRoot,
  listeningUrl,
  PROJECT,
  type Served,
  serveArgs,
  startBuilt,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/**
 * The built executable (dist/src/bin.js, as installed) keeps V8's code cache of the agent in the unit's
 * cache directory ($CACHE_DIRECTORY): written 10 s after a start, used by the next. The cache is code the
 * daemon runs as root, so these tests plant what another user or a stale build could leave there.
 */

const SECRET = "code-cache-webhook-secret-012345";
/** The start-up writes the cache this long after it starts (src/start.ts). */
const WRITE_AFTER_MS = 10_000;
const NOBODY = 65534;
const isCache = (name: string) => /^agent-[0-9a-f]{16}\.v8cache$/.test(name);

let fx: Fixture;
let root: string;
let manifest: string;
const running: Served[] = [];

before(() => {
  assert.ok(existsSync(BUILT_BIN), "dist/src/bin.js is missing: node build.mjs (npm ci runs it)");
  assert.equal(process.getuid?.(), 0, "these tests plant files of another user: run them as root (CI does)");
  fx = makeFixture({ "landing/index.html": "<p>cached</p>\n" });
  root = hostRoot(fx.dir, SECRET);
  manifest = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
});
after(() => fx.cleanup());
async function stopAll() {
  for (const d of running.splice(0)) {
    d.child.kill("SIGTERM");
    await d.exited;
  }
}
afterEach(stopAll);

/** A cache directory as systemd makes it (CacheDirectoryMode=0700, root's). */
function cacheDir(): string {
  const dir = mkdtempSync(path.join(fx.dir, "cache-"));
  chmodSync(dir, 0o700);
  return dir;
}

/** Starts the built daemon with this cache directory; resolves with what its "listening" line says of it. */
async function serve(dir: string | undefined, env: NodeJS.ProcessEnv = {}) {
  const startedAt = Date.now();
  const daemon = startDaemon(dir, env);
  const url = await listeningUrl(daemon);
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  const codeCache = /"codeCache":"(\w+)"/.exec(line)?.[1];
  return { codeCache, url, daemon, startedAt };
}

function startDaemon(dir: string | undefined, env: NodeJS.ProcessEnv = {}, bin = BUILT_BIN): Served {
  const state = mkdtempSync(path.join(fx.dir, "state-"));
  const daemon = startBuilt(
    [...serveArgs(manifest, fx.clone, root), "--state-dir", state],
    { CACHE_DIRECTORY: dir, ...env },
    bin,
  );
  running.push(daemon);
  return daemon;
}

async function cacheWritten(dir: string, besides: string): Promise<string> {
  const deadline = Date.now() + WRITE_AFTER_MS + 15_000;
  for (;;) {
    const name = readdirSync(dir).find((n) => isCache(n) && n !== besides);
    if (name) return name;
    if (Date.now() > deadline) throw new Error(`no cache written in ${dir}: ${readdirSync(dir).join(", ")}`);
    await sleep(100);
  }
}

describe("V8's code cache of the built agent", () => {
  let valid: Buffer;
  let name: string;

  it("compiles the bundle as it is read: the file is the module inside CommonJS's wrapper, Node's own", () => {
    const bundle = readFileSync(path.join(PROJECT, "dist/src/agent.cjs"), "latin1");
    const [open, close] = Module.wrap("\0").split("\0") as [string, string];
    assert.ok(bundle.startsWith(open), `the bundle starts with ${JSON.stringify(open)}`);
    assert.ok(bundle.trimEnd().endsWith(close.trim()), `the bundle ends with ${JSON.stringify(close)}`);
    // One function and nothing around it: what the start-up runs with exports, require, module and paths.
    const run = new Script(bundle, { filename: "agent.cjs" }).runInThisContext();
    assert.equal(typeof run, "function");
    assert.equal(run.length, 5);
  });

  it("is neither read nor written without a cache directory (an operator's command, the tests)", async () => {
    for (const dir of [undefined, ""]) {
      const { codeCache, url } = await serve(dir);
      assert.equal(codeCache, "off");
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
    }
  });

  it("is written whole (0600) 10 s after a start and used by the next; another build's is removed, other files kept", async () => {
    const dir = cacheDir();
    const stale = "agent-0123456789abcdef.v8cache";
    writeFileSync(path.join(dir, stale), "an older build's cache", { mode: 0o600 });
    writeFileSync(path.join(dir, "notes"), "not ours", { mode: 0o600 });
    // Not ours though named alike (a directory given by hand, shared); a crashed daemon's temporary file is.
    writeFileSync(path.join(dir, "agent-notes.txt"), "not ours", { mode: 0o600 });
    writeFileSync(path.join(dir, `${stale}.4242.tmp`), "a crashed write", { mode: 0o600 });
    const first = await serve(dir);
    assert.equal(first.codeCache, "absent");
    name = await cacheWritten(dir, stale);
    const writtenAfter = Date.now() - first.startedAt;
    assert.ok(writtenAfter >= WRITE_AFTER_MS, `written ${writtenAfter} ms after the start, not before 10 s`);
    const st = statSync(path.join(dir, name));
    assert.equal(st.mode & 0o777, 0o600);
    assert.deepEqual(
      readdirSync(dir).sort(),
      ["agent-notes.txt", name, "notes"].sort(),
      "no temporary file left, the stale one gone",
    );
    valid = readFileSync(path.join(dir, name));
    assert.ok(valid.length > 100_000, `a cache of the whole start-up (${valid.length} bytes)`);
    await stopAll();

    const second = await serve(dir);
    assert.equal(second.codeCache, "used");
    // The cached code does its job: the start-up reconcile deploys the page, the probe answers.
    assert.equal((await fetch(`${second.url}/healthz`)).status, 200);
    const page = path.join(root, "var/www/index.html");
    for (let i = 0; i < 100 && !existsSync(page); i++) await sleep(100);
    assert.equal(readFileSync(page, "utf8"), "<p>cached</p>\n");
    await stopAll();
    // Another Node or other flags: another file, never a cache V8 would refuse.
    const other = await serve(dir, { NODE_OPTIONS: "--max-old-space-size=150" });
    assert.equal(other.codeCache, "absent");
  });

  it("one V8 refuses (garbage, cut short) is said so, the daemon starts without it, and it is replaced", async () => {
    const dir = cacheDir();
    writeFileSync(path.join(dir, name), valid.subarray(0, valid.length >> 1), { mode: 0o600 });
    assert.equal((await serve(dir)).codeCache, "rejected");
    await stopAll();
    writeFileSync(path.join(dir, name), Buffer.alloc(valid.length, 0x5a), { mode: 0o600 });
    const garbage = await serve(dir);
    assert.equal(garbage.codeCache, "rejected");
    assert.equal((await fetch(`${garbage.url}/healthz`)).status, 200);
    const deadline = Date.now() + WRITE_AFTER_MS + 15_000;
    while (readFileSync(path.join(dir, name))[0] === 0x5a && Date.now() < deadline) await sleep(200);
    await stopAll();
    assert.equal((await serve(dir)).codeCache, "used", "the replacement is a cache V8 takes");
  });

  it("a file or directory another user could write, or a link, is not trusted: not read, and the file replaced, never its target", async () => {
    // Group- or world-writable, another owner's, or a symbolic link (to a valid cache): each is not read.
    const plant = (how: (file: string) => void) => {
      const dir = cacheDir();
      const file = path.join(dir, name);
      how(file);
      return dir;
    };
    const writable = plant((f) => writeFileSync(f, valid, { mode: 0o600 }));
    chmodSync(path.join(writable, name), 0o620);
    const foreign = plant((f) => {
      writeFileSync(f, valid, { mode: 0o600 });
      chownSync(f, NOBODY, NOBODY);
    });
    const target = path.join(fx.dir, "elsewhere");
    writeFileSync(target, valid, { mode: 0o600 });
    const linked = plant((f) => symlinkSync(target, f));
    // Past the bound (64 MiB) a file is not read; at it, it is read (and V8 refuses what it holds).
    const MAX = 64 * 1024 * 1024;
    const huge = plant((f) => {
      writeFileSync(f, "", { mode: 0o600 });
      truncateSync(f, MAX + 1);
    });
    for (const dir of [writable, foreign, linked, huge])
      assert.equal((await serve(dir)).codeCache, "untrusted", dir);
    truncateSync(path.join(huge, name), MAX);
    assert.equal((await serve(huge)).codeCache, "rejected", "a file of 64 MiB is read");

    // A directory others can write, or another user's: nothing read, nothing written there.
    const open = plant((f) => writeFileSync(f, valid, { mode: 0o600 }));
    chmodSync(open, 0o777);
    const theirs = plant((f) => writeFileSync(f, valid, { mode: 0o600 }));
    chownSync(theirs, NOBODY, NOBODY);
    for (const dir of [open, theirs]) assert.equal((await serve(dir)).codeCache, "untrusted", dir);

    // After its wait, the daemon that found a link has put its own file in its place.
    await sleep(WRITE_AFTER_MS + 2_000);
    const replaced = lstatSync(path.join(linked, name));
    assert.ok(replaced.isFile(), "the link is replaced by a file");
    assert.equal(replaced.mode & 0o777, 0o600);
    assert.deepEqual(readFileSync(target), valid, "the link's target is untouched");
    for (const dir of [open, theirs]) {
      assert.deepEqual(readdirSync(dir), [name], `nothing written in ${dir}`);
      assert.deepEqual(readFileSync(path.join(dir, name)), valid);
    }
    for (const dir of [writable, foreign, linked, open, theirs])
      rmSync(dir, { recursive: true, force: true });
  });

  it("a directory that does not exist is off, a file in its place or one it cannot reach untrusted; the daemon starts either way", async () => {
    const file = path.join(fx.dir, "a-file");
    writeFileSync(file, "");
    const loop = path.join(fx.dir, "a-loop");
    symlinkSync(loop, loop);
    for (const [dir, state] of [
      [path.join(fx.dir, "missing"), "off"],
      [path.join(file, "sub"), "off"],
      [file, "untrusted"],
      [loop, "untrusted"],
    ] as const) {
      const s = await serve(dir);
      assert.equal(s.codeCache, state, dir);
      assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
    }
  });

  it("a FIFO in the cache file's place does not hold up the start", async () => {
    const dir = cacheDir();
    execFileSync("mkfifo", ["-m", "0600", path.join(dir, name)]);
    const s = await serve(dir);
    assert.equal(s.codeCache, "untrusted");
    assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
  });

  it("a temporary file left by a killed daemon of the same pid does not stop the write", async () => {
    const dir = cacheDir();
    const s = await serve(dir);
    assert.equal(s.codeCache, "absent");
    writeFileSync(path.join(dir, `${name}.${s.daemon.child.pid}.tmp`), "cut short", { mode: 0o600 });
    assert.equal(await cacheWritten(dir, ""), name);
    assert.deepEqual(readFileSync(path.join(dir, name)).subarray(0, 16), valid.subarray(0, 16));
    assert.deepEqual(readdirSync(dir), [name]);
  });

  it("a write that fails, even to remove its temporary file, never stops the daemon", async () => {
    const dir = cacheDir();
    const s = await serve(dir);
    // A directory where the temporary file goes: neither written nor removed.
    const tmp = path.join(dir, `${name}.${s.daemon.child.pid}.tmp`);
    mkdirSync(tmp);
    await sleep(WRITE_AFTER_MS + 2_000);
    assert.equal(s.daemon.child.exitCode, null, s.daemon.out());
    assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
    assert.deepEqual(readdirSync(dir), [path.basename(tmp)]);
  });

  it("a bundle replaced by another of the same length, inode and mtime runs its own code, not the cached one", async () => {
    // A copy of the build, its files dated as npm dates them (1985-10-26).
    const copy = mkdtempSync(path.join(fx.dir, "build-"));
    cpSync(path.join(PROJECT, "dist"), path.join(copy, "dist"), { recursive: true });
    copyFileSync(path.join(PROJECT, "package.json"), path.join(copy, "package.json"));
    symlinkSync(path.join(PROJECT, "node_modules"), path.join(copy, "node_modules"));
    const bundle = path.join(copy, "dist/src/agent.cjs");
    const NPM_MTIME = 499162500;
    utimesSync(bundle, NPM_MTIME, NPM_MTIME);
    const bin = path.join(copy, "dist/src/bin.js");
    const dir = cacheDir();
    const listening = /.*"msg":"(listening|LISTENING)".*/;
    const first = startDaemon(dir, {}, bin);
    assert.match(
      await first.waitFor(listening),
      /"msg":"listening".*"codeCache":"absent"|"codeCache":"absent".*"msg":"listening"/,
    );
    await cacheWritten(dir, "");
    await stopAll();

    // A fix of one character, written over the file in place (cp -p, tar) with the date kept.
    const before = statSync(bundle);
    const old = readFileSync(bundle, "utf8");
    const edited = old.replace('codeCache:codeCache()},"listening")', 'codeCache:codeCache()},"LISTENING")');
    assert.notEqual(edited, old, "the serve command's listening line is in the bundle");
    writeFileSync(bundle, edited);
    utimesSync(bundle, NPM_MTIME, NPM_MTIME);
    const after = statSync(bundle);
    assert.deepEqual([after.ino, after.size, after.mtimeMs], [before.ino, before.size, before.mtimeMs]);

    const second = startDaemon(dir, {}, bin);
    const line = await second.waitFor(listening);
    assert.match(line, /"msg":"LISTENING"/, "the new bundle's code runs");
    assert.match(line, /"codeCache":"absent"/);
  });
});
