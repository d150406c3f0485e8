import { spawnSync } from "node:child_process";

/**
 * A suite's `skip` option for a program it needs. Away from CI a missing program skips the suite with the
 * reason; in CI (CI=true) it fails the suite instead: a skipped suite is a failed suite there, and .ci/run
 * must install what the tests need.
 */
export function needs(program: string, args: string[], install: string): string | false {
  if (spawnSync(program, args).status === 0) return false;
  const reason = `${program} is not installed (${install})`;
  if (process.env.CI) throw new Error(`${reason}: CI runs every suite, so .ci/run must install it`);
  return reason;
}

/** For a test that finds out only while running that the machine cannot do what it needs. */
export function cannot(t: { skip(reason: string): void }, reason: string): void {
  if (process.env.CI) throw new Error(`${reason}: CI runs every test`);
  t.skip(reason);
}
