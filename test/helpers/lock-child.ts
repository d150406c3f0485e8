/**
 * A process for the lock tests: takes the deploy lock of argv[2], proves it is alone inside (mkdir of a
 * shared directory fails if another holder is in), stays argv[3] ms, leaves, releases. Exit 3 if it met
 * another holder inside. With argv[3] = "hold" it prints "held" and keeps the lock until killed.
 */
import { mkdirSync, rmdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { acquireLock } from "../../src/lock.js";

const [dir = "", stay = "0"] = process.argv.slice(2);
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
await sleep(Number(stay));
rmdirSync(inside);
await lock.release();
