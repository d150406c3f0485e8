import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import {
  chmodSync,
  type FSWatcher,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  watch,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep, setImmediate as turn } from "node:timers/promises";
import pino from "pino";
import { manifestSchema } from "../src/manifest/schema.js";
import {
  type KeyFiles,
  type LiveWebhookKeys,
  RECHECK_MS,
  watchWebhookKeys,
} from "../src/server/webhook-keys.js";

/**
 * The daemon's webhook keys against real files and real inotify: no syscall per delivery while nothing
 * changes, and every way a secret file can change is still seen at the next delivery, or within RECHECK_MS
 * where no event can tell.
 */

const OLD = "old-webhook-secret-0123456789abcdef";
const NEW = "new-webhook-secret-0123456789abcdef";

/**
 * A poll of the event loop after the change, as a delivery always has: it comes over a socket, read by a
 * poll after the change was made, and the watch's event is read by that poll or an earlier one.
 */
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

/** The filesystem as the daemon calls it, counting the looks; `watch` replaced when given. */
function counting(watchWith?: KeyFiles["watch"]) {
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
    watch: watchWith ?? watch,
  };
  return { calls, fs };
}

async function start(fs: KeyFiles): Promise<LiveWebhookKeys> {
  const manifest = manifestSchema.parse({
    version: 1,
    host: "lxctest",
    listen: { port: 9000 },
    steps: [{ name: "page", kind: "file", source: "index.html", targets: ["/var/www/index.html"] }],
  });
  const log = pino(
    { level: "info" },
    {
      write: (line: string) => {
        logged.push(line);
      },
    },
  );
  const src = { manifest, env: {}, envFile: undefined, under: (p: string) => path.join(root, p) };
  live = await watchWebhookKeys(src, path.join(dir, "state"), log, fs);
  return live;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "webhook-keys-"));
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

describe("webhook keys: watched, not looked at per delivery", () => {
  it("10,000 deliveries on unchanged files: one look (two stats) at the first, none after, until RECHECK_MS", async () => {
    const { calls, fs } = counting();
    const keys = await start(fs);
    const before = { ...calls };
    for (let i = 0; i < 10_000; i++) assert.equal((await keys.keys()).current, OLD);
    assert.ok(calls.stat - before.stat <= 3, `stats: ${calls.stat - before.stat}`);
    const settled = calls.stat;
    for (let i = 0; i < 1000; i++) await keys.keys();
    assert.equal(calls.stat, settled, "no stat while nothing changed");
    await sleep(RECHECK_MS + 50);
    await keys.keys();
    assert.ok(calls.stat > settled, "looked at again once RECHECK_MS passed");
    const again = calls.stat;
    await keys.keys();
    assert.equal(calls.stat, again, "and not again right after");
  });

  it("a secret rewritten in place (same inode) is taken at the next delivery", async () => {
    const keys = await start(counting().fs);
    assert.equal((await keys.keys()).current, OLD);
    const ino = statSync(currentFile()).ino;
    writeFileSync(currentFile(), `${NEW}\n`);
    assert.equal(statSync(currentFile()).ino, ino);
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("rotation: a next secret appears, is taken; the rename next → current leaves only the new one", async () => {
    const keys = await start(counting().fs);
    await keys.keys();
    writeFileSync(nextFile(), `${NEW}\n`, { mode: 0o600 });
    await polled();
    assert.deepEqual(await keys.keys(), { current: OLD, next: NEW });
    renameSync(nextFile(), currentFile());
    await polled();
    assert.deepEqual(await keys.keys(), { current: NEW, next: undefined });
  });

  it("a next secret made readable by others (chmod only) is dropped at the next delivery", async () => {
    writeFileSync(nextFile(), `${NEW}\n`, { mode: 0o600 });
    const keys = await start(counting().fs);
    assert.equal((await keys.keys()).next, NEW);
    chmodSync(nextFile(), 0o644);
    await polled();
    assert.equal((await keys.keys()).next, undefined);
    assert.ok(logged.some((l) => /next webhook secret refused: .*readable by others/.test(l)));
  });

  it(`"look": the files are looked at now, before the watch is heard (a delivery the keys refused)`, async () => {
    const keys = await start(counting().fs);
    await keys.keys();
    writeFileSync(nextFile(), `${NEW}\n`, { mode: 0o600 });
    // No turn of the event loop: the watch cannot have told yet.
    assert.equal((await keys.keys()).next, undefined);
    assert.equal((await keys.keys("look")).next, NEW);
  });

  it("a secret file that is a symlink: its target is not watched, so every delivery looks at it", async () => {
    const elsewhere = path.join(dir, "credentials");
    mkdirSync(elsewhere);
    writeFileSync(path.join(elsewhere, "webhook"), `${OLD}\n`, { mode: 0o600 });
    rmSync(currentFile());
    symlinkSync(path.join(elsewhere, "webhook"), currentFile());
    const { calls, fs } = counting();
    const keys = await start(fs);
    assert.equal((await keys.keys()).current, OLD);
    writeFileSync(path.join(elsewhere, "webhook"), `${NEW}\n`);
    const before = calls.stat;
    assert.equal((await keys.keys()).current, NEW, "seen without any event");
    assert.ok(calls.stat > before);
  });

  it("the directory moved away and made again: the new one is watched, its changes seen at once", async () => {
    const keys = await start(counting().fs);
    await keys.keys();
    renameSync(etc(), path.join(root, "etc/deploy-agent.old"));
    mkdirSync(etc());
    writeFileSync(currentFile(), `${NEW}\n`, { mode: 0o600 });
    await polled();
    assert.equal((await keys.keys()).current, NEW);
    // The old directory's watch is gone: a change there is nothing; the new one's is heard.
    writeFileSync(currentFile(), `${OLD}\n`);
    await polled();
    assert.equal((await keys.keys()).current, OLD);
  });

  it(`a watch that never tells (a filesystem without inotify): a change is seen within RECHECK_MS (${RECHECK_MS} ms)`, async () => {
    const deaf = (() => Object.assign(new EventEmitter(), { close() {} })) as unknown as KeyFiles["watch"];
    const keys = await start(counting(deaf).fs);
    await keys.keys();
    const at = Date.now();
    writeFileSync(currentFile(), `${NEW}\n`);
    while ((await keys.keys()).current !== NEW) {
      assert.ok(Date.now() - at <= RECHECK_MS + 200, "not seen within RECHECK_MS");
      await sleep(20);
    }
    assert.ok(Date.now() - at >= RECHECK_MS - 100, "the floor, not an event, told");
  });

  it("no watch to be had (the inotify limit): every delivery looks, and says so once", async () => {
    const full = (() => {
      throw Object.assign(new Error("ENOSPC: System limit for number of file watchers reached"), {
        code: "ENOSPC",
      });
    }) as unknown as KeyFiles["watch"];
    const { calls, fs } = counting(full);
    const keys = await start(fs);
    assert.equal(logged.filter((l) => /not watched \(inotify\)/.test(l)).length, 1);
    const before = calls.stat;
    await keys.keys();
    await keys.keys();
    assert.equal(calls.stat - before, 4, "two stats per delivery");
    writeFileSync(currentFile(), `${NEW}\n`);
    assert.equal((await keys.keys()).current, NEW, "seen without a turn");
  });

  it("a watch that fails later: every delivery looks from then on, logged as a warning", async () => {
    let made: (FSWatcher & EventEmitter) | undefined;
    const failing = ((d: string, o: object, l: () => void) => {
      made = watch(d, o, l) as FSWatcher & EventEmitter;
      return made;
    }) as unknown as KeyFiles["watch"];
    const keys = await start(counting(failing).fs);
    await keys.keys();
    made?.emit("error", Object.assign(new Error("watch failed"), { code: "EIO" }));
    assert.ok(logged.some((l) => /"level":40.*no longer watched \(the watch failed\)/.test(l)));
    writeFileSync(currentFile(), `${NEW}\n`);
    assert.equal((await keys.keys()).current, NEW, "seen without a turn");
  });
});
