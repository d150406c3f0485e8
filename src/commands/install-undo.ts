import { asAgentError } from "../core/errors.js";
import type { CommandRunner } from "../host/command.js";

/**
 * How install takes back what it did when a later action fails, so that a failed install leaves the host as
 * it found it. Each action registers its undo before it acts. They run in phases: units first (stopped or
 * disabled where install started or enabled them), then files, links and directories in reverse order, then
 * systemd reloads the restored unit files, then units that ran before are restarted on them.
 */

export type UndoPhase = "units" | "files" | "reload" | "restart";
const PHASES: UndoPhase[] = ["units", "files", "reload", "restart"];

export interface Undo {
  add(phase: UndoPhase, what: string, undo: () => Promise<unknown>): void;
  /** Runs every undo, each tried once; what could not be undone, with why. */
  run(): Promise<string[]>;
}

export function createUndo(): Undo {
  const entries: { phase: number; what: string; undo: () => Promise<unknown> }[] = [];
  return {
    add(phase, what, undo) {
      entries.push({ phase: PHASES.indexOf(phase), what, undo });
    },
    async run() {
      const failures: string[] = [];
      // Latest first within a phase; the sort is stable.
      const order = [...entries].reverse().sort((a, b) => a.phase - b.phase);
      entries.length = 0;
      for (const e of order) {
        await e.undo().catch((err: unknown) => failures.push(`${e.what}: ${asAgentError(err).message}`));
      }
      return failures;
    },
  };
}

/** Whether a unit is enabled and active: systemctl's answers, asked in a dry run too. */
export async function unitState(
  run: CommandRunner,
  systemctl: readonly string[],
  unit: string,
): Promise<{ enabled: boolean; active: boolean }> {
  // Both exit non-zero for "no": an answer, not a failure.
  const ask = (verb: string, yes: string) =>
    run([...systemctl, verb, unit], { query: true }).then(
      (r) => r.stdout.trim() === yes,
      () => false,
    );
  return { enabled: await ask("is-enabled", "enabled"), active: await ask("is-active", "active") };
}

/**
 * Registers how to put `unit` back as it is now, before install enables, starts or restarts it: stopped and
 * disabled where it was neither, restarted on the restored files where it ran.
 */
export async function keepUnitState(
  undo: Undo,
  run: CommandRunner,
  systemctl: readonly string[],
  unit: string,
): Promise<void> {
  const was = await unitState(run, systemctl, unit);
  const back = was.enabled ? (was.active ? [] : ["stop"]) : ["disable", ...(was.active ? [] : ["--now"])];
  if (back.length) undo.add("units", unit, () => run([...systemctl, ...back, unit]));
  if (was.active) undo.add("restart", unit, () => run([...systemctl, "restart", unit]));
}
