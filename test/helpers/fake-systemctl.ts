import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * A `systemctl` stand-in put first on PATH: it appends each call to a log and exits 1 for the verbs
 * listed in $FAKE_SYSTEMCTL_FAIL (space separated), like a unit that fails to start. With `watch`, each
 * call also keeps a copy of that file as the call found it; with `hangAt(n)`, the n-th call never returns (a
 * unit whose start never finishes) until it is killed.
 */
export interface FakeSystemctl {
  calls(): string[];
  failOn(...verbs: string[]): void;
  /** The watched file's content at each call, in call order ("" when it did not exist). */
  seen(): string[];
  watch(file: string): void;
  hangAt(call: number): void;
  restore(): void;
}

export function installFakeSystemctl(): FakeSystemctl {
  const dir = mkdtempSync(path.join(tmpdir(), "fake-systemctl-"));
  const log = path.join(dir, "calls.log");
  const script = path.join(dir, "systemctl");
  writeFileSync(
    script,
    `#!/bin/sh
echo "$*" >> "${log}"
n=$(wc -l < "${log}")
if [ -n "$FAKE_SYSTEMCTL_WATCH" ]; then cat "$FAKE_SYSTEMCTL_WATCH" > "${dir}/seen.$n" 2>/dev/null; fi
if [ "$n" = "$FAKE_SYSTEMCTL_HANG_AT" ]; then exec sleep 600; fi
for verb in $FAKE_SYSTEMCTL_FAIL; do
  if [ "$1" = "$verb" ]; then echo "Job for $2 failed because the control process exited with error code." >&2; exit 1; fi
done
exit 0
`,
  );
  chmodSync(script, 0o755);
  writeFileSync(log, "");
  const oldPath = process.env.PATH;
  process.env.PATH = `${dir}:${oldPath}`;
  return {
    calls: () => readFileSync(log, "utf8").split("\n").filter(Boolean),
    failOn: (...verbs) => {
      process.env.FAKE_SYSTEMCTL_FAIL = verbs.join(" ");
    },
    seen: () =>
      readFileSync(log, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((_, i) =>
          existsSync(path.join(dir, `seen.${i + 1}`))
            ? readFileSync(path.join(dir, `seen.${i + 1}`), "utf8")
            : "",
        ),
    watch: (file) => {
      process.env.FAKE_SYSTEMCTL_WATCH = file;
    },
    hangAt: (call) => {
      process.env.FAKE_SYSTEMCTL_HANG_AT = String(call);
    },
    restore: () => {
      process.env.PATH = oldPath;
      delete process.env.FAKE_SYSTEMCTL_FAIL;
      delete process.env.FAKE_SYSTEMCTL_WATCH;
      delete process.env.FAKE_SYSTEMCTL_HANG_AT;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
