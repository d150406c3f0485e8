import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parse as parseYaml } from "yaml";
import { AgentError } from "../core/errors.js";
import { gitAt } from "../source/git-command.js";
import { line, short, text } from "./fleet.js";
import { askStatus, type FleetFlags, type Host, hintLines } from "./fleet-ask.js";

/**
 * `deploy-agent fleet wait REV [--timeout S]`: asks every host each second until each ran REV, or the timeout
 * ends it (an ask still out is cut at the deadline). A host is not taken at its word alone: it is done only
 * when its last run is REV, every step it reports applied REV, and it reports every step its manifest at REV
 * (in the operator's clone) has; a host that is done and then goes back is waited for again.
 */

/** The step names of a host's manifest at `rev`: what its /status must report once it ran it. */
async function stepsAt(repo: string, rev: string, file: string): Promise<string[]> {
  const yaml = await gitAt(repo)
    .raw(["show", `${rev}:${file}`])
    .catch(() => "");
  let doc: { steps?: unknown } | null = null;
  try {
    doc = parseYaml(yaml);
  } catch {
    // A manifest that does not parse at REV: its host reports CONFIG_INVALID, which is what it is waited for.
  }
  const steps = Array.isArray(doc?.steps) ? (doc.steps as { name?: unknown }[]) : [];
  return steps.flatMap((s) => (typeof s?.name === "string" ? [s.name] : []));
}

/** Why the host does not run `rev` yet, or null when it does. */
function laggard(h: Host, rev: string, steps: readonly string[]): string | null {
  if (!h.status) return line(`${h.code}: ${h.problem}`);
  const s = h.status;
  const behind = s.steps.filter((st) => st.lastAppliedRevision !== rev);
  const missing = steps.filter((name) => !s.steps.some((st) => st.name === name));
  if (!behind.length && !missing.length && s.deployedRevision === rev) return null;
  const failed = behind.find((st) => st.lastResult?.outcome === "failed" && st.lastResult.revision === rev);
  if (failed)
    return `${text(failed.name)} failed (${text(failed.lastResult?.code ?? "failed")}: ${text(failed.lastResult?.message ?? "")})`;
  if (s.suspended) return `suspended: ${text(s.suspended.reason)}`;
  if (s.lastError) return `${text(s.lastError.code)}: ${text(s.lastError.message)}`;
  if (missing.length && s.deployedRevision === rev)
    return `reports no step ${text(missing.join(", "))} (its manifest at ${short(rev)} has it)`;
  const pending = behind.length ? ` (${text(behind.map((st) => st.name).join(", "))} not applied yet)` : "";
  return `still at ${short(s.deployedRevision)}${pending}`;
}

export async function fleetWaitCommand(
  flags: FleetFlags,
  target: string,
  out: (t: string) => void,
): Promise<number> {
  const repo = path.resolve(flags.repo ?? ".");
  const rev = (
    await gitAt(repo)
      .revparse(["--verify", `${target}^{commit}`])
      .catch(() => "")
  ).trim();
  if (!rev) throw new AgentError("USAGE", `fleet wait: ${target} is not a commit in ${repo}`);
  const started = Date.now();
  const deadline = started + flags.timeoutSeconds * 1000;
  const expected = new Map<string, Promise<string[]>>();
  const stepsOf = (file: string) => {
    const known = expected.get(file) ?? stepsAt(repo, rev, file);
    expected.set(file, known);
    return known;
  };
  let said = "";
  let problems: Host[] = [];
  for (;;) {
    // Every ask ends at the deadline: a host that never answers does not hold the wait past --timeout.
    const asked = await askStatus(flags, AbortSignal.timeout(Math.max(0, Math.ceil(deadline - Date.now()))));
    const waiting: string[] = [];
    problems = asked.filter((h) => !h.status);
    for (const h of asked) {
      const why = laggard(h, rev, await stepsOf(h.file));
      if (why) waiting.push(`${h.host}: ${why}`);
    }
    if (!waiting.length) {
      out(`every host runs ${short(rev)}\n`);
      return 0;
    }
    // Progress: a line whenever who is waited for, or why, changes.
    const now = waiting.join("; ");
    if (now !== said) {
      out(`waiting for ${short(rev)} (${Math.round((Date.now() - started) / 1000)}s): ${now}\n`);
      said = now;
    }
    // No ask begins at the deadline (it would have no time): the last answers are the verdict.
    await sleep(Math.max(0, Math.min(1000, deadline - Date.now())));
    if (Date.now() >= deadline) {
      out(
        `${[`not every host runs ${short(rev)} after ${flags.timeoutSeconds}s:`, ...waiting.map((w) => `  ${w}`), ...hintLines(problems)].join("\n")}\n`,
      );
      return 1;
    }
  }
}
