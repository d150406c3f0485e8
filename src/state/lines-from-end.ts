import { constants } from "node:fs";
import { open } from "node:fs/promises";

/**
 * A file's lines read from its end, for a log appended to by line (the deploy history): the newest are what
 * is wanted, and a damaged line anywhere must hide nothing around it. Read CHUNK_BYTES at a time with one
 * line's carry, so memory is bounded by the caller's line bound, never by what the file holds.
 */

/** Bytes read at a time, from the end of the file backwards. */
const CHUNK_BYTES = 64 * 1024;

/** A line read from the end: its bytes (valid until the next line is asked for), or null when too long. */
export interface Line {
  bytes: Buffer | null;
}

/**
 * The file's lines from its end backwards, newest first, empty ones left out. A line of `maxLineBytes` or
 * more is never held: it comes as `bytes: null`. Stops after `scanBytes` bytes (the line cut there is not
 * returned) and says so in `cut`. Memory: CHUNK_BYTES and maxLineBytes, reused.
 */
export async function* linesFromEnd(
  file: string,
  options: { scanBytes: number; maxLineBytes: number; cut: { value: boolean } },
): AsyncGenerator<Line> {
  const { scanBytes, maxLineBytes, cut } = options;
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    // Without blocking: a FIFO in its place would hold the open, and a thread of the pool, until a writer came.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    if (!st.isFile()) throw new Error("not a regular file");
    const { size } = st;
    const floor = Math.max(0, size - scanBytes);
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    // The part of the current line already read (it lies after `pos`), kept at the carry's end.
    const carry = Buffer.allocUnsafe(maxLineBytes);
    let carried = 0;
    let long = false;
    let pos = size;
    while (pos > floor) {
      const length = Math.min(CHUNK_BYTES, pos - floor);
      pos -= length;
      let got = 0;
      while (got < length) {
        const { bytesRead } = await handle.read(chunk, got, length - got, pos + got);
        if (!bytesRead) throw new Error("the file shrank while read");
        got += bytesRead;
      }
      let end = length;
      for (let nl = chunk.lastIndexOf(0x0a, end - 1); ; nl = chunk.lastIndexOf(0x0a, end - 1)) {
        if (nl < 0 || nl >= end) nl = -1;
        const piece = chunk.subarray(nl + 1, end);
        if (!long && carried + piece.length < maxLineBytes) {
          piece.copy(carry, maxLineBytes - carried - piece.length);
          carried += piece.length;
        } else long = true;
        if (nl === -1) break;
        const line = long ? null : carry.subarray(maxLineBytes - carried);
        if (long || carried) yield { bytes: line };
        carried = 0;
        long = false;
        end = nl;
      }
    }
    // At the bound, the line read last is whole only when a line break comes just before it.
    const whole =
      floor === 0 || (await handle.read(chunk, 0, 1, floor - 1)).bytesRead === 0 || chunk[0] === 0x0a;
    if (whole && (long || carried)) yield { bytes: long ? null : carry.subarray(maxLineBytes - carried) };
    cut.value = floor > 0;
  } finally {
    await handle.close();
  }
}
