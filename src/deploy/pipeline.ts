import { AgentError } from "../core/errors.js";
import { rooted } from "../host/host-fs.js";
import { manifestAt } from "../manifest/at-revision.js";
import { planLazily } from "../plan/plan.js";
import type { Descent } from "../source/ancestry.js";
import { verifyRevision } from "../source/verify.js";
import { acquireLock } from "../state/lock.js";
import { readState } from "../state/read-state.js";
import { writeState } from "../state/state.js";
import { applyActions } from "./apply-step.js";
import type { DeployOptions } from "./deploy-options.js";
import { type RunFacts, recordRun } from "./run-record.js";
import type { RunReport } from "./run-report.js";
import { fetchSource, sourceAt, syncWorkTree } from "./source-sync.js";

/**
 * One deploy run: sync source → plan → apply → finalize. A dry run is the same pipeline with the
 * step context in describe mode; it never resets the work tree, writes state or takes the lock.
 * Reads: the clone, the state file. Writes (real runs): the clone, targets, the state file after each step.
 */

/** What an unpin did on a host it found not pinned (under the deploy lock): nothing. `unpin --json` prints it. */
export interface NotPinned {
  schema: "deploy-agent/unpin@1";
  host: string;
  pinned: false;
}

export function deploy(opts: DeployOptions & { unpin?: false | undefined }): Promise<RunReport>;
export function deploy(opts: DeployOptions): Promise<RunReport | NotPinned>;
export async function deploy(opts: DeployOptions): Promise<RunReport | NotPinned> {
  if (opts.preview && !opts.dryRun)
    throw new AgentError("INTERNAL", "a preview revision is never applied: it is not verified");
  const started = Date.now();
  const warnings: string[] = [];
  // The deploy history: what a real run did, or how far it got before it threw. A dry run records nothing.
  const facts: RunFacts = {
    started,
    host: opts.manifest.host,
    trigger: opts.trigger,
    revision: null,
    previousRevision: null,
    verified: false,
    applied: false,
    bounds: opts.manifest.history,
  };
  const remember = async (outcome: Parameters<typeof recordRun>[2], locked: boolean) => {
    if (!opts.dryRun) await recordRun(opts.stateDir, facts, outcome, { locked, log: opts.log });
  };
  const lock = opts.dryRun
    ? null
    : await acquireLock(opts.stateDir, opts.lockWaitMs, (holder) =>
        opts.log.warn({ holder }, "waiting for the deploy lock held by another run"),
      ).catch(async (error: unknown) => {
        // Only a lock another run holds is recorded: the directory passed its safety check. An unsafe state
        // directory (STATE_UNSAFE) is never written to, nor created, not even for the history.
        if (error instanceof AgentError && error.code === "LOCKED") await remember({ error }, false);
        throw error;
      });
  opts.log.debug("syncing the source");
  try {
    const loaded = await readState(opts.stateDir, opts.manifest.host);
    if (loaded.problem) warnings.push(`state unusable: ${loaded.problem}`);
    const { state } = loaded;
    if (opts.unpin && !state.pinned) {
      // Decided under the lock, before anything is fetched: unpin is not a way to deploy.
      if (loaded.problem) opts.log.warn(`state unusable, no pin found in it: ${loaded.problem}`);
      opts.log.info("not pinned: nothing to unpin, nothing deployed");
      return { schema: "deploy-agent/unpin@1", host: opts.manifest.host, pinned: false };
    }
    if (state.suspended && (opts.pin || opts.unpin)) {
      // The operator's command refused, before any commit is looked at: none is at fault, none is marked.
      facts.revision = opts.pin?.revision ?? null;
      throw new AgentError("PIN_REFUSED", `${opts.manifest.host} is suspended (${state.suspended.reason})`, {
        hint: "deploy-agent resume first; a suspended host deploys nothing, and its pin (if any) stays as it is",
      });
    }
    const from = state.lastRun?.revision ?? null;
    facts.previousRevision = from;
    // How far the branch has come on this host: a pin goes back, the anchor never does, so a push must
    // still descend from the newest revision verified here (a pin to B must not let a push of C undo D).
    const anchor = state.anchor ?? from;
    // Kept from now on: a pin's run never moves it, and a state written before anchors were must not
    // let the pinned revision become the point a later push is checked against.
    if (anchor) state.anchor = anchor;
    // The history says the anchor as the state file has it (what the next run checks against): the tip
    // verified by a run that ends before it writes the state is not one.
    facts.anchor = state.anchor;
    const save = async (options?: { durable: boolean }) => {
      await writeState(opts.stateDir, state, options);
      facts.anchor = state.anchor;
    };
    const fetched = await fetchSource(opts, warnings);
    // Known before it is verified: a refused revision is recorded with it.
    facts.revision = opts.preview ?? opts.pin?.revision ?? fetched.tip;
    if (!opts.preview) opts.onRevision?.(facts.revision);
    const under = rooted(opts.root);
    const { verify } = opts.manifest.repo;
    let revision = fetched.tip;
    let moved: Descent = "same";
    // The revision a pin held until a newer verified tip replaced it (held in its turn, or deployed by unpin).
    let superseded: RunReport["superseded"];
    const replaced = (by: string) => {
      const was = state.pinned?.newestRevision;
      if (was && was !== by && was !== state.pinned?.revision) superseded = { revision: was, by };
    };
    if (opts.preview) {
      // A pull request's head, only ever planned in the dry context: not verified, never applied.
      revision = opts.preview;
    } else if (opts.pin) {
      // Going back on purpose: the revision itself is verified, never checked for descent.
      await verifyRevision(fetched.repo, verify, under, { from: opts.pin.revision, to: opts.pin.revision });
      revision = opts.pin.revision;
    } else {
      const pinned = opts.unpin ? undefined : state.pinned;
      try {
        // Before anything of the revision is used, its own manifest included.
        moved = await verifyRevision(fetched.repo, verify, under, {
          from: anchor,
          to: fetched.tip,
          acceptRewrite: opts.acceptRewrite,
        });
        state.anchor = fetched.tip;
        if (pinned || opts.unpin) replaced(fetched.tip);
        if (pinned) pinned.newestRevision = fetched.tip;
      } catch (err) {
        // A pinned host keeps running its pin when the tip is refused: that is what a pin is for.
        if (!pinned || !(err instanceof AgentError)) throw err;
        warnings.push(
          `the branch's tip ${fetched.tip.slice(0, 12)} is refused (${err.code}: ${err.message}); the pinned revision runs`,
        );
      }
      if (pinned) {
        // The pinned revision is verified again at every run (a key revoked since is a key revoked now). The
        // run is about it from here: refused, it is its commit that says so, not the tip's, which passed.
        facts.revision = pinned.revision;
        opts.onRevision?.(pinned.revision);
        await verifyRevision(fetched.repo, verify, under, { from: pinned.revision, to: pinned.revision });
        revision = pinned.revision;
        warnings.push(
          `pinned at ${pinned.revision.slice(0, 12)} by ${pinned.by} until ${pinned.until} (${pinned.reason})${pinned.newestRevision ? `: ${pinned.newestRevision.slice(0, 12)} is remembered for unpin` : ""}`,
        );
      }
    }
    if (opts.unpin) delete state.pinned;
    facts.verified = verify.mode !== "off";
    const rewrittenFrom = moved === "rewritten" ? anchor : null;
    facts.revision = revision;
    const source = await sourceAt(fetched, state, revision);
    if (rewrittenFrom) {
      warnings.push(
        `history rewritten: ${source.revision.slice(0, 12)} does not descend from ${rewrittenFrom.slice(0, 12)}, the newest revision verified on this host (${opts.acceptRewrite ? "accepted by the operator" : "deployed because repo.verify is off"})`,
      );
    }
    const { suspended } = state;
    if (suspended && !opts.dryRun) {
      // Verified and remembered; deployed on resume.
      state.suspended = { ...suspended, newestRevision: source.revision };
      await save();
      const durationMs = Date.now() - started;
      opts.log.info(
        { revision: source.revision, since: suspended.since, reason: suspended.reason },
        "suspended: nothing deployed; the newest revision is remembered for resume",
      );
      const report: RunReport = {
        schema: "deploy-agent/run@1",
        host: opts.manifest.host,
        dryRun: false,
        revision: source.revision,
        previousHead: source.previousHead,
        result: "suspended",
        pinned: state.pinned ?? null,
        rewrittenFrom,
        ...(superseded ? { superseded } : {}),
        suspended: { reason: suspended.reason, since: suspended.since },
        pendingRestart: [],
        warnings,
        steps: [],
        durationMs,
      };
      await remember({ report }, true);
      return report;
    }
    if (suspended)
      warnings.push(
        `host suspended since ${suspended.since} (${suspended.reason}): a run deploys nothing until resume`,
      );
    const { manifest, pendingRestart, notes, sha256 } = opts.manifestPath
      ? await manifestAt(source.snapshot, opts.manifestPath, opts.manifest, opts.load ?? {}, opts.overrides)
      : { manifest: opts.manifest, pendingRestart: [] as string[], notes: [] as string[], sha256: undefined };
    if (opts.pin) {
      // The revision's own repo settings (verify among them) would be the host's after a restart, since the
      // clone then holds its manifest: a pin must not weaken how the host verifies.
      if (pendingRestart.includes("repo")) {
        throw new AgentError(
          "PIN_REFUSED",
          `the manifest at ${opts.pin.revision.slice(0, 12)} has other repo settings (repo.verify among them) than this host runs with`,
          { hint: "pin a revision whose manifest has the same repo section, or push a fix instead" },
        );
      }
      // The pin is recorded before any step runs: a kill -9 mid-run converges to it. Whatever the run's
      // result, it holds: said, so that a failed pin is not taken for no pin. The branch's newest revision
      // verified here (the one the host ran, unless a pin held it already) is held from now on, and its
      // commit is told so: its "deployed" is no longer what the host runs.
      const held = state.pinned?.newestRevision ?? state.anchor;
      state.pinned = { ...opts.pin, ...(held && held !== opts.pin.revision ? { newestRevision: held } : {}) };
      warnings.push(
        `pinned at ${opts.pin.revision.slice(0, 12)} until ${opts.pin.until}, whatever this run's result: pushes are held; deploy-agent unpin returns to the branch's tip`,
      );
      if (!opts.dryRun) {
        await save();
        facts.pin = "set";
      }
    } else if (opts.unpin && !opts.dryRun) {
      await save();
      facts.pin = "cleared";
    }
    // Only now is the run about to deploy: a suspended host's run deploys nothing, and a refused pin is
    // not a deploy, so neither says "deploying".
    opts.onStart?.(source.revision);
    opts.onManifest?.(manifest);
    facts.bounds = manifest.history;
    // Said once per revision (its first run here), not at every poll; /status keeps the pending keys.
    if (state.lastRun?.revision !== source.revision) warnings.push(...notes);
    const actions = await planLazily(
      {
        steps: manifest.steps,
        revision: source.revision,
        state,
        changes: source.changes,
        options: { all: opts.all, only: opts.only, force: opts.force ?? [] },
      },
      source.snapshot.paths,
    );

    const steps = await applyActions(opts, manifest, actions, source, state, save);

    const ran = steps.filter((s) => s.run);
    const outcome = ran.some((s) => s.outcome === "failed") ? "failed" : ran.length ? "succeeded" : "noop";
    const resetFailed = opts.dryRun
      ? undefined
      : await syncWorkTree(source, warnings, opts.log, outcome === "failed");
    const result: RunReport["result"] =
      !opts.dryRun || outcome !== "succeeded"
        ? outcome
        : ran.some((s) => s.outcome === "unknown")
          ? "undetermined"
          : "planned";
    const durationMs = Date.now() - started;
    if (!opts.dryRun) {
      state.lastRun = {
        revision: source.revision,
        result: outcome,
        at: new Date().toISOString(),
        durationMs,
        ...(sha256 ? { manifestSha256: sha256 } : {}),
      };
      await save();
    }
    for (const w of warnings) opts.log.warn(w);
    // A run with nothing to do is routine (every poll, every unrelated push): debug, not info.
    opts.log[result === "noop" ? "debug" : "info"](
      { revision: source.revision, result, durationMs, dryRun: opts.dryRun },
      "run finished",
    );
    const report: RunReport = {
      schema: "deploy-agent/run@1",
      host: opts.manifest.host,
      dryRun: opts.dryRun,
      revision: source.revision,
      previousHead: source.previousHead,
      pinned: state.pinned ?? null,
      rewrittenFrom,
      ...(superseded ? { superseded } : {}),
      suspended: suspended ? { reason: suspended.reason, since: suspended.since } : null,
      pendingRestart,
      result,
      warnings,
      ...(resetFailed ? { resetFailed } : {}),
      steps,
      durationMs,
    };
    facts.applied = manifest.steps.every((s) => state.steps[s.name]?.lastAppliedRevision === source.revision);
    await remember({ report }, true);
    return report;
  } catch (error) {
    await remember({ error }, true);
    throw error;
  } finally {
    await lock?.release();
  }
}
