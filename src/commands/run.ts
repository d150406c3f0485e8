import { AgentError, asAgentError } from "../core/errors.js";
import { deploy, type NotPinned } from "../deploy/pipeline.js";
import { renderRun } from "../deploy/report.js";
import type { RunReport } from "../deploy/run-report.js";
import { type DeployEvent, errorOf, eventBase, hostEvent, runEvents } from "../notify/events.js";
import { createNotifier } from "../notify/notifier.js";
import { operator, type Trigger } from "../state/history-record.js";
import type { Pin } from "../state/state.js";
import { STEP_KINDS } from "../steps/index.js";
import { type CommonFlags, commandLogger, resolveDeployed } from "./options.js";

/** How long a one-shot run waits for its notices to go out. */
const NOTIFY_DRAIN_MS = 15_000;

export interface RunFlags extends CommonFlags {
  dryRun: boolean;
  all: boolean;
  step: string[];
  fetch: boolean;
  waitSeconds: number;
  /** Take a rewritten branch on purpose (verify still checks its commits). */
  acceptRewrite?: boolean;
  /** `pin`: deploy this revision and hold the host there; `unpin`: end it. */
  pin?: Pin | undefined;
  unpin?: boolean | undefined;
}

/**
 * `deploy-agent run`: one deploy (or, with --dry-run, its description). Exit 1 when a step failed.
 * The history records it as the operator's (`trigger`: resume passes its own).
 */
export async function runCommand(
  flags: RunFlags,
  out: (text: string) => void,
  trigger: Trigger = { kind: "manual", user: operator() },
): Promise<number> {
  const r = await resolveDeployed(flags);
  const { manifest } = r.loaded;
  const names = manifest.steps.map((s) => s.name);
  const unknown = flags.step.filter((s) => !names.includes(s));
  if (unknown.length) {
    throw new AgentError("USAGE", `no step named ${unknown.join(", ")} in ${r.loaded.file}`, {
      hint: `steps: ${names.join(", ")} (kinds known: ${STEP_KINDS.join(", ")})`,
    });
  }
  const log = commandLogger(flags, r, { logFile: !flags.dryRun });
  if (r.note) log.warn(r.note);
  // Notices go out as the daemon's do; a dry run prints the ones it would send instead.
  let applied = manifest;
  const notifier = createNotifier({
    config: () => applied.notify,
    host: manifest.host,
    log,
    stateDir: r.stateDir,
  });
  const notices: string[] = [];
  const emit = (e: DeployEvent) => {
    if (flags.dryRun) notices.push(...notifier.describe(e));
    else notifier.publish(e);
  };
  let revision: string | null = null;
  let report: RunReport | NotPinned;
  try {
    report = await deploy({
      manifest,
      manifestPath: r.manifestPath,
      load: r.load,
      onManifest: (m) => {
        applied = m;
      },
      onRevision: (rev) => {
        revision = rev;
      },
      onStart: (rev) => {
        revision = rev;
        emit(hostEvent(applied, { event: "run.started", revision: rev }));
      },
      repoDir: r.repoDir,
      stateDir: r.stateDir,
      root: r.root,
      dryRun: flags.dryRun,
      trigger,
      fetch: flags.fetch,
      all: flags.all,
      only: flags.step,
      lockWaitMs: flags.waitSeconds * 1000,
      acceptRewrite: flags.acceptRewrite,
      pin: flags.pin,
      unpin: flags.unpin,
      log,
    });
  } catch (err) {
    const e = asAgentError(err);
    // A pin or unpin refused, or a run that found another holding the deploy lock, is the operator's command
    // refused, the host left as it was: no commit is at fault and no run failed, so nothing is said on a
    // commit or in a room (the operator reads the error; the lock's holder tells of its own run).
    if (e.code !== "PIN_REFUSED" && e.code !== "LOCKED") {
      emit(hostEvent(applied, { event: "run.error", revision, error: errorOf(e) }));
      await notifier.drain(NOTIFY_DRAIN_MS);
    }
    throw err;
  }
  if (report.schema === "deploy-agent/unpin@1") {
    // An unpin that found no pin under the deploy lock: nothing ran, nothing to notify.
    out(
      flags.json
        ? `${JSON.stringify(report, null, 2)}\n`
        : `${report.host} is not pinned: nothing to unpin, nothing deployed (deploy-agent run deploys)\n`,
    );
    return 0;
  }
  // A dry run's notices are those of the run it describes: its planned steps as if they succeeded.
  const outcome =
    report.result === "planned" || report.result === "undetermined"
      ? { ...report, result: "succeeded" as const }
      : report;
  for (const e of runEvents(outcome, eventBase(applied, report.revision))) emit(e);
  await notifier.drain(NOTIFY_DRAIN_MS);
  if (flags.json) out(`${JSON.stringify(flags.dryRun ? { ...report, notices } : report, null, 2)}\n`);
  else out(`${renderRun(report)}${notices.map((n) => `notice: ${n}\n`).join("")}`);
  // Suspended: nothing was deployed, which is not what `run` was asked for.
  return report.result === "failed" || report.result === "suspended" ? 1 : 0;
}
