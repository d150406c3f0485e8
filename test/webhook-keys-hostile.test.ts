import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  watch,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import pino from "pino";
import { manifestSchema } from "../src/manifest/schema.js";
import { type KeyFiles, type LiveWebhookKeys, watchWebhookKeys } from "../src/server/webhook-keys.js";

const OLD = "old-webhook-secret-0123456789abcdef";
const NEW = "new-webhook-secret-0123456789abcdef";

async function polled(): Promise<void> {
  await turn();
  await turn();
}

let dir: string;
let root: string;
let live: LiveWebhookKeys | undefined;
let logged: string[];
const etc = () => path.join(root, "etc/deploy-agent");
const currentFile = () => path.join(etc(), "webhook-secret");
const nextFile = () => path.join(etc(), "webhook-secret.next");

function counting() {
  const calls = { stat: 0, lstat: 0 };
  const fs: KeyFiles = {
    stat: ((...a: Parameters<typeof statSync>) => {
      calls.stat++;
      return statSync(...a);
    }) as typeof statSync,
    lstat: ((...a: Parameters<typeof lstatSync>) => {
      calls.lstat++;
      return lstatSync(...a);
    }) as typeof lstatSync,
    watch,
  };
  return { calls, fs };
}

async function start(fs: KeyFiles = counting().fs): Promise<LiveWebhookKeys> {
  const manifest = manifestSchema.parse({
    version: 1,
    host: "lxctest",
    listen: { port: 9000 },
    steps: [{ name: "page", kind: "file", source: "index.html", targets: ["/var/www/index.html"] }],
  });
  const log = pino({ level: "info" }, { write: (l: string) => void logged.push(l) });
  const src = { manifest, env: {}, envFile: undefined, under: (p: string) => path.join(root, p) };
  live = await watchWebhookKeys(src, path.join(dir, "state"), log, fs);
  return live;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "webhook-keys-hostile-"));
  root = path.join(dir, "root");
  mkdirSync(etc(), { recursive: true });
  mkdirSync(path.join(dir, "state"));
  writeFileSync(currentFile(), `${OLD}\n`, { mode: 0o600 });
  logged = [];
});
afterEach(() => {
  live?.close();
  live = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The daemon's webhook keys against the changes a watch hears late or not at all: each must be seen by the
 * first delivery after it, as when every delivery stat()ed the files.
 */

describe("webhook keys, hostile", () => {
  it("deliveries after the one whose look started a refresh wait for it, not take the keys it replaces", async () => {
    const keys = await start();
    await keys.keys();
    writeFileSync(currentFile(), `${NEW}\n`);
    await polled();
    const first = keys.keys();
    const second = keys.keys();
    assert.equal((await second).current, NEW);
    assert.equal((await first).current, NEW);
  });

  it("a change during a refresh, heard by a delivery that joins it: the next delivery still sees it", async () => {
    const keys = await start();
    await keys.keys();
    let stale = 0;
    for (let i = 0; i < 200; i++) {
      const a = `secret-a-${i}-0123456789abcdef`;
      const b = `secret-b-${i}-0123456789abcdef`;
      writeFileSync(currentFile(), `${a}\n`);
      await polled();
      const p1 = keys.keys();
      for (let k = 0; k < i % 6; k++) await turn();
      writeFileSync(currentFile(), `${b}\n`);
      await polled();
      const p2 = keys.keys();
      await p1;
      await p2;
      if ((await keys.keys()).current !== b) stale++;
      await keys.keys("look"); // settle
    }
    assert.equal(stale, 0, `stale keys after ${stale} of 200 trials`);
  });

  it("truncate, then write (echo > file): the old secret is not kept once the new one is written", async () => {
    const keys = await start();
    await keys.keys();
    let stale = 0;
    for (let i = 0; i < 200; i++) {
      const s = `secret-${i}-0123456789abcdefgh`;
      truncateSync(currentFile(), 0);
      await polled();
      const p1 = keys.keys();
      for (let k = 0; k < i % 6; k++) await turn();
      writeFileSync(currentFile(), `${s}\n`);
      await polled();
      const p2 = keys.keys();
      await p1;
      await p2;
      if ((await keys.keys()).current !== s) stale++;
      await keys.keys("look");
    }
    assert.equal(stale, 0, `stale keys after ${stale} of 200 trials`);
  });

  it("written through a hard link in another directory", async () => {
    const keys = await start();
    await keys.keys();
    const other = path.join(dir, "elsewhere");
    mkdirSync(other);
    linkSync(currentFile(), path.join(other, "link"));
    await polled();
    await keys.keys();
    await keys.keys("look");
    writeFileSync(path.join(other, "link"), `${NEW}\n`);
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("chmod through a hard link in another directory", async () => {
    const keys = await start();
    await keys.keys();
    const other = path.join(dir, "elsewhere");
    mkdirSync(other);
    linkSync(currentFile(), path.join(other, "link"));
    await polled();
    await keys.keys("look");
    chmodSync(path.join(other, "link"), 0o644);
    await polled();
    // Readable by others: the daemon keeps the last good one, but it must have looked (logged).
    await keys.keys();
    assert.ok(
      logged.some((l) => /readable by others/.test(l)),
      "the chmod was not seen",
    );
  });

  it("a symlinked directory in the path re-pointed (ln -sfn)", async () => {
    const releases = path.join(root, "etc/releases");
    mkdirSync(path.join(releases, "v1"), { recursive: true });
    mkdirSync(path.join(releases, "v2"), { recursive: true });
    writeFileSync(path.join(releases, "v1/webhook-secret"), `${OLD}\n`, { mode: 0o600 });
    writeFileSync(path.join(releases, "v2/webhook-secret"), `${NEW}\n`, { mode: 0o600 });
    rmSync(etc(), { recursive: true });
    symlinkSync("releases/v1", etc());
    const keys = await start();
    assert.equal((await keys.keys()).current, OLD);
    await keys.keys();
    const tmp = path.join(root, "etc/.tmp-link");
    symlinkSync("releases/v2", tmp);
    renameSync(tmp, etc());
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("an ancestor directory moved away and made again", async () => {
    const keys = await start();
    await keys.keys();
    renameSync(path.join(root, "etc"), path.join(root, "etc.old"));
    mkdirSync(etc(), { recursive: true });
    writeFileSync(currentFile(), `${NEW}\n`, { mode: 0o600 });
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("the directory moved away, a delivery, then made again: watched again (no stat per delivery)", async () => {
    const { calls, fs } = counting();
    const keys = await start(fs);
    await keys.keys();
    renameSync(etc(), path.join(root, "etc/deploy-agent.old"));
    await polled();
    await keys.keys(); // a delivery while the directory is gone
    mkdirSync(etc());
    writeFileSync(currentFile(), `${NEW}\n`, { mode: 0o600 });
    await polled();
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await keys.keys()).current, NEW);
    await keys.keys();
    const before = calls.stat + calls.lstat;
    for (let i = 0; i < 100; i++) await keys.keys();
    assert.ok(calls.stat + calls.lstat - before <= 6, `syscalls: ${calls.stat + calls.lstat - before}`);
  });

  it("forged deliveries: a refused delivery costs no more syscalls than before the watch (two stats)", async () => {
    const { calls, fs } = counting();
    const keys = await start(fs);
    await keys.keys();
    const before = calls.stat + calls.lstat;
    for (let i = 0; i < 100; i++) {
      await keys.keys();
      await keys.keys("look");
    }
    const per = (calls.stat + calls.lstat - before) / 100;
    assert.ok(per <= 2, `syscalls per refused delivery: ${per}`);
  });

  it("a directory in the path that is a symlink: its target's parent renamed, every delivery looks", async () => {
    const releases = path.join(dir, "releases");
    mkdirSync(path.join(releases, "v1"), { recursive: true });
    writeFileSync(path.join(releases, "v1/webhook-secret"), `${OLD}\n`, { mode: 0o600 });
    rmSync(etc(), { recursive: true });
    symlinkSync(path.join(releases, "v1"), etc());
    const keys = await start();
    assert.equal((await keys.keys()).current, OLD);
    await keys.keys();
    renameSync(releases, path.join(dir, "releases.old"));
    mkdirSync(path.join(releases, "v1"), { recursive: true });
    writeFileSync(path.join(releases, "v1/webhook-secret"), `${NEW}\n`, { mode: 0o600 });
    assert.equal((await keys.keys()).current, NEW, "seen without any event");
  });

  it("watches do not grow with changes; close() closes them all and none is made after", async () => {
    let open = 0;
    let made = 0;
    const { fs } = counting();
    fs.watch = ((...a: Parameters<typeof watch>) => {
      const w = watch(...a);
      open++;
      made++;
      const close = w.close.bind(w);
      w.close = () => {
        open--;
        close();
      };
      return w;
    }) as typeof watch;
    const keys = await start(fs);
    const first = open;
    for (let i = 0; i < 20; i++) {
      writeFileSync(nextFile(), `${NEW}-${i}\n`, { mode: 0o600 });
      await polled();
      await keys.keys();
      renameSync(nextFile(), currentFile());
      await polled();
      await keys.keys();
    }
    assert.equal((await keys.keys()).current, `${NEW}-19`);
    assert.ok(open <= first + 1, `open watches: ${open}, at start ${first}`);
    keys.close();
    assert.equal(open, 0);
    const before = made;
    writeFileSync(currentFile(), `${OLD}\n`);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await keys.keys()).current, OLD);
    assert.equal(made, before, "no watch made after close()");
  });

  it("a bind-mounted secret file rewritten on the other side (docker secrets): root only", async (t) => {
    const host = path.join(dir, "host-secret");
    writeFileSync(host, `${OLD}\n`, { mode: 0o600 });
    try {
      execFileSync("mount", ["--bind", host, currentFile()], { stdio: "ignore" });
    } catch {
      t.skip("mount --bind not allowed here");
      return;
    }
    try {
      const keys = await start();
      assert.equal((await keys.keys()).current, OLD);
      await keys.keys();
      writeFileSync(host, `${NEW}\n`);
      await polled();
      assert.equal((await keys.keys()).current, NEW);
    } finally {
      live?.close();
      execFileSync("umount", [currentFile()]);
    }
  });

  it("a next secret written readable by others then chmodded 600 between looks: taken", async () => {
    const keys = await start();
    await keys.keys();
    writeFileSync(nextFile(), `${NEW}\n`, { mode: 0o644 });
    await polled();
    assert.equal((await keys.keys()).next, undefined);
    chmodSync(nextFile(), 0o600);
    await polled();
    assert.equal((await keys.keys()).next, NEW);
  });

  it("the next secret's file made too long in place: dropped", async () => {
    writeFileSync(nextFile(), `${NEW}\n`, { mode: 0o600 });
    const keys = await start();
    assert.equal((await keys.keys()).next, NEW);
    writeFileSync(nextFile(), "x".repeat(5000));
    await polled();
    assert.equal((await keys.keys()).next, undefined);
    writeFileSync(nextFile(), "short");
    await polled();
    assert.equal((await keys.keys()).next, undefined);
  });
});
