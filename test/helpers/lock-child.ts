/**
 * A process for the lock tests: takes the deploy lock of argv[2], proves it is alone inside (mkdir of a
 * shared directory fails if another holder is in), stays argv[3] ms, leaves, releases. Exit 3 if it met
 * another holder inside. With argv[3] = "hold" it prints "held" and keeps the lock until killed. With
 * argv[3] = "rounds", it does that argv[4] times, waiting and staying 0–4 ms each time, drawn from the
 * seed argv[5]. With argv[3] = "prepare" it readies the next acquisition (prepareLock), prints "prepared"
 * and waits until killed.
 */
import { mkdirSync, rmdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { acquireLock, prepareLock } from "../../src/state/lock.js";
import { mulberry32 as random } from "./seeded.js";

const [dir = "", stay = "0", count = "1", seed = "1"] = process.argv.slice(2);

async function once(ms: () => number) {
  const lock = await acquireLock(dir, 60_000);
  if (stay === "hold") {
    process.stdout.write("held\n");
    await sleep(600_000);
  }
  const inside = path.join(dir, "inside");
  try {
    mkdirSync(inside);
  } catch {
    process.exit(3);
  }
  await sleep(ms());
  rmdirSync(inside);
  await lock.release();
}

if (stay === "prepare") {
  prepareLock(dir);
  process.stdout.write("prepared\n");
  setInterval(() => {}, 60_000);
} else if (stay === "rounds") {
  const next = random(Number(seed));
  for (let i = 0; i < Number(count); i++) {
    await sleep(Math.floor(next() * 5));
    await once(() => Math.floor(next() * 5));
  }
} else await once(() => Number(stay));
