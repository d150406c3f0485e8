import type { Stats } from "node:fs";
import { AgentError } from "../core/errors.js";
import { problemText, readBounded } from "./bounded-read.js";

/**
 * Reading a host file the agent may replace: what is refused (TARGET_UNSAFE: a link at the name where links
 * are not followed, a FIFO or device, a file over the bound or one that changes size while read) and how
 * each refusal reads. Kept apart from host-fs.ts, which decides when to read; the rules here are the ones
 * the README's TARGET_UNSAFE entry and the attack tests hold to.
 */

/** Largest host file read (a target, a backup, a flag file): a larger one is refused, never buffered. */
export const MAX_HOST_FILE_BYTES = 64 * 1024 * 1024;

const unsafe = (hostPath: string, what: string) =>
  new AgentError("TARGET_UNSAFE", `${hostPath} ${what}: it is neither read nor written through`);

/**
 * A host file and its status from one descriptor (bounded-read.ts): a regular file of at most
 * MAX_HOST_FILE_BYTES, and with `follow` false never through a symbolic link at the name. Null when nothing
 * is there.
 */
export function readHostFile(
  file: string,
  hostPath: string,
  follow: boolean,
): Promise<{ data: Buffer; st: Stats } | null> {
  return readBounded(file, {
    follow,
    maxBytes: MAX_HOST_FILE_BYTES,
    fail: (p) => {
      switch (p.is) {
        case "unopenable":
          return new AgentError("TARGET_WRITE_FAILED", `cannot read ${hostPath}: ${p.code}`, {
            cause: p.cause,
          });
        default:
          return unsafe(hostPath, problemText(p, MAX_HOST_FILE_BYTES));
      }
    },
  });
}
