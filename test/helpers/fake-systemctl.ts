import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * A `systemctl` stand-in put first on PATH: it appends each call to a log and exits 1 for the verbs
 * listed in $FAKE_SYSTEMCTL_FAIL (space separated), like a unit that fails to start.
 */
export interface FakeSystemctl {
  calls(): string[];
  failOn(...verbs: string[]): void;
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
    restore: () => {
      process.env.PATH = oldPath;
      delete process.env.FAKE_SYSTEMCTL_FAIL;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
