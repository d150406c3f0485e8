import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

/**
 * A file read whole through one descriptor, for the files the agent reads at a path others may have a hand
 * in (a target in a service's directory, a secret file): opened without blocking (a FIFO in its place would
 * hold the open, and a thread of the pool, until someone writes), its status taken from that descriptor,
 * refused unless it is a regular file within a bound, and read to exactly its size. Each caller says how a
 * problem reads in its own words and error code; this module only names the problem.
 */

/** Why a file was not read. */
export type ReadProblem =
  /** open() failed (other than ENOENT); `code` is its errno name. */
  | { is: "unopenable"; code: string; cause: unknown }
  /** A symbolic link at the name, where links are not followed. */
  | { is: "link" }
  | { is: "not-file" }
  | { is: "too-large"; size: number }
  /** Its size at the end of the read is not the size it had when opened. */
  | { is: "changed" };

/**
 * The problem in words, to follow the file's name ("… is not a regular file"), for a caller with nothing more
 * precise to say; `maxBytes` is the bound the file was read with.
 */
export function problemText(p: ReadProblem, maxBytes: number): string {
  switch (p.is) {
    case "unopenable":
      return `cannot be opened (${p.code})`;
    case "link":
      return "is a symbolic link";
    case "not-file":
      return "is not a regular file";
    case "too-large":
      return `is ${p.size} bytes, more than the ${maxBytes} read`;
    case "changed":
      return "changed size while it was read";
  }
}

export interface BoundedReadOptions {
  /** Larger files are refused before a byte is read. */
  maxBytes: number;
  /** false: a symbolic link at the name is refused (O_NOFOLLOW), not read through. */
  follow: boolean;
  /** The caller's own checks on the open file's status (mode, owner), before the file-type check. */
  check?: (st: Stats) => void;
  /** The caller's error for a problem. */
  fail: (problem: ReadProblem) => Error;
}

// O_NOCTTY: a terminal at the name (a link to /dev/tty…) never becomes the daemon's controlling one.
const openFlags = (o: BoundedReadOptions) =>
  constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | (o.follow ? 0 : constants.O_NOFOLLOW);

/** open()'s failure as the caller's error; null for ENOENT (nothing at the name). */
function openFailure(err: unknown, o: BoundedReadOptions): Error | null {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  if (code === "ENOENT") return null;
  // With O_NOFOLLOW, ELOOP is a link at the name; following, it is a loop of links: unopenable.
  return o.fail(code === "ELOOP" && !o.follow ? { is: "link" } : { is: "unopenable", code, cause: err });
}

/** The open file's status against the caller's checks and the bound. */
function checkStatus(st: Stats, o: BoundedReadOptions): void {
  o.check?.(st);
  if (!st.isFile()) throw o.fail({ is: "not-file" });
  if (st.size > o.maxBytes) throw o.fail({ is: "too-large", size: st.size });
}

/** The file's bytes and the status they were read with, or null when there is nothing at the name. */
export async function readBounded(
  file: string,
  o: BoundedReadOptions,
): Promise<{ data: Buffer; st: Stats } | null> {
  let handle: FileHandle;
  try {
    handle = await open(file, openFlags(o));
  } catch (err) {
    const failure = openFailure(err, o);
    if (!failure) return null;
    throw failure;
  }
  try {
    const st = await handle.stat();
    checkStatus(st, o);
    const data = Buffer.alloc(st.size);
    let at = 0;
    while (at < data.length) {
      const { bytesRead } = await handle.read(data, at, data.length - at, at);
      if (!bytesRead) break;
      at += bytesRead;
    }
    // One byte past its size at the start: a file that grows while it is read is not buffered without end.
    if (at < data.length || (await handle.read(Buffer.alloc(1), 0, 1, at)).bytesRead)
      throw o.fail({ is: "changed" });
    return { data, st };
  } finally {
    await handle.close();
  }
}

/**
 * readBounded without the thread pool, for a small file on a push's path (the state file: a few syscalls on
 * the page cache cost less than a round trip to the pool each).
 */
export function readBoundedSync(file: string, o: BoundedReadOptions): { data: Buffer; st: Stats } | null {
  let fd: number;
  try {
    fd = openSync(file, openFlags(o));
  } catch (err) {
    const failure = openFailure(err, o);
    if (!failure) return null;
    throw failure;
  }
  try {
    const st = fstatSync(fd);
    checkStatus(st, o);
    const data = Buffer.alloc(st.size);
    let at = 0;
    while (at < data.length) {
      const got = readSync(fd, data, at, data.length - at, at);
      if (!got) break;
      at += got;
    }
    if (at < data.length || readSync(fd, Buffer.alloc(1), 0, 1, at)) throw o.fail({ is: "changed" });
    return { data, st };
  } finally {
    closeSync(fd);
  }
}
