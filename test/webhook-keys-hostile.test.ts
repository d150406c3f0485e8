import assert from "node:assert/strict";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
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
