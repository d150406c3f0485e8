import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { EventEmitter } from "node:events";
import {
  chmodSync,
  type FSWatcher,
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
import { setTimeout as sleep, setImmediate as turn } from "node:timers/promises";
import pino from "pino";
import type { WatchFs } from "../src/host/path-watch.js";
import { manifestSchema } from "../src/manifest/schema.js";
import { type LiveWebhookKeys, RECHECK_MS, watchWebhookKeys } from "../src/server/webhook-keys.js";
import { cannot } from "./helpers/needs.js";

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
function counting(watchWith?: WatchFs["watch"]) {
  const calls = { stat: 0, lstat: 0 };
  const fs: WatchFs = {
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

async function start(fs: WatchFs): Promise<LiveWebhookKeys> {
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
    const deaf = (() => Object.assign(new EventEmitter(), { close() {} })) as unknown as WatchFs["watch"];
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
    }) as unknown as WatchFs["watch"];
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
    }) as unknown as WatchFs["watch"];
    const keys = await start(counting(failing).fs);
    await keys.keys();
    made?.emit("error", Object.assign(new Error("watch failed"), { code: "EIO" }));
    assert.ok(logged.some((l) => /"level":40.*no longer watched \(the watch failed\)/.test(l)));
    writeFileSync(currentFile(), `${NEW}\n`);
    assert.equal((await keys.keys()).current, NEW, "seen without a turn");
  });
});

/**
 * The daemon's webhook keys against the changes a watch hears late or not at all: each must be seen by the
 * first delivery after it, as when every delivery stat()ed the files.
 */

describe("webhook keys, hostile", () => {
  it("deliveries after the one whose look started a refresh wait for it, not take the keys it replaces", async () => {
    const keys = await start(counting().fs);
    await keys.keys();
    writeFileSync(currentFile(), `${NEW}\n`);
    await polled();
    const first = keys.keys();
    const second = keys.keys();
    assert.equal((await second).current, NEW);
    assert.equal((await first).current, NEW);
  });

  /**
   * 200 trials of two changes, the second made while the first's refresh may still be under way (0 to 5
   * turns later): the deliveries after the second must have its secret, never the one before.
   */
  async function staleAfterTwoChanges(first: (i: number) => void, second: (i: number) => string) {
    const keys = await start(counting().fs);
    await keys.keys();
    let stale = 0;
    for (let i = 0; i < 200; i++) {
      first(i);
      await polled();
      const p1 = keys.keys();
      for (let k = 0; k < i % 6; k++) await turn();
      const s = second(i);
      await polled();
      const p2 = keys.keys();
      await p1;
      await p2;
      if ((await keys.keys()).current !== s) stale++;
      await keys.keys("look"); // settled before the next trial
    }
    assert.equal(stale, 0, `stale keys after ${stale} of 200 trials`);
  }

  it("a change during a refresh, heard by a delivery that joins it: the next delivery still sees it", () =>
    staleAfterTwoChanges(
      (i) => writeFileSync(currentFile(), `secret-a-${i}-0123456789abcdef\n`),
      (i) => {
        writeFileSync(currentFile(), `secret-b-${i}-0123456789abcdef\n`);
        return `secret-b-${i}-0123456789abcdef`;
      },
    ));

  it("truncate, then write (echo > file): the old secret is not kept once the new one is written", () =>
    staleAfterTwoChanges(
      () => truncateSync(currentFile(), 0),
      (i) => {
        writeFileSync(currentFile(), `secret-${i}-0123456789abcdefgh\n`);
        return `secret-${i}-0123456789abcdefgh`;
      },
    ));

  /** The keys, settled after a hard link to the current secret was made in another directory: its path. */
  async function linkedElsewhere(): Promise<{ keys: LiveWebhookKeys; link: string }> {
    const keys = await start(counting().fs);
    await keys.keys();
    const other = path.join(dir, "elsewhere");
    mkdirSync(other);
    const link = path.join(other, "link");
    linkSync(currentFile(), link);
    await polled();
    await keys.keys();
    await keys.keys("look");
    return { keys, link };
  }

  it("written through a hard link in another directory", async () => {
    const { keys, link } = await linkedElsewhere();
    writeFileSync(link, `${NEW}\n`);
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("chmod through a hard link in another directory", async () => {
    const { keys, link } = await linkedElsewhere();
    chmodSync(link, 0o644);
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
    const keys = await start(counting().fs);
    assert.equal((await keys.keys()).current, OLD);
    await keys.keys();
    const tmp = path.join(root, "etc/.tmp-link");
    symlinkSync("releases/v2", tmp);
    renameSync(tmp, etc());
    await polled();
    assert.equal((await keys.keys()).current, NEW);
  });

  it("an ancestor directory moved away and made again", async () => {
    const keys = await start(counting().fs);
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
    const keys = await start(counting().fs);
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
      cannot(t, "mount --bind is not allowed here");
      return;
    }
    try {
      const keys = await start(counting().fs);
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
    const keys = await start(counting().fs);
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
    const keys = await start(counting().fs);
    assert.equal((await keys.keys()).next, NEW);
    writeFileSync(nextFile(), "x".repeat(5000));
    await polled();
    assert.equal((await keys.keys()).next, undefined);
    writeFileSync(nextFile(), "short");
    await polled();
    assert.equal((await keys.keys()).next, undefined);
  });
});
