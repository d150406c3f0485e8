import { HOST_IDENTITY_FILE, hostRecipient } from "../secrets/identity.js";
import type { LocalStatus } from "../server/status-model.js";
import { readState } from "../state/read-state.js";
import { orphanedSteps, stepStatuses } from "../state/state.js";
import { type CommonFlags, resolve } from "./options.js";

/** `deploy-agent status`: per step the applied revision, last outcome and its age, from the state file. */

function age(at: string | undefined, now: number): string {
  if (!at) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(at)) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export async function statusCommand(flags: CommonFlags, out: (text: string) => void): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const { state, problem } = await readState(r.stateDir, manifest.host);
  const steps = stepStatuses(manifest.steps, state);
  const orphaned = orphanedSteps(manifest.steps, state);
  // The public half of the host's age identity: what secrets/secrets.yaml lists for this host.
  const ageRecipient = (await hostRecipient(r.under(HOST_IDENTITY_FILE))) ?? null;
  if (flags.json) {
    const doc: LocalStatus = {
      schema: "deploy-agent/status@1",
      host: manifest.host,
      stateDir: r.stateDir,
      stateProblem: problem ?? null,
      lastRun: state.lastRun ?? null,
      suspended: state.suspended ?? null,
      pinned: state.pinned ?? null,
      steps,
      orphanedSteps: orphaned,
      ageRecipient,
    };
    out(`${JSON.stringify(doc, null, 2)}\n`);
    return 0;
  }
  const now = Date.now();
  const lines = [`host ${manifest.host}, state ${r.stateDir}`];
  lines.push(
    ageRecipient
      ? `age recipient: ${ageRecipient} (${HOST_IDENTITY_FILE})`
      : `age recipient: none (no ${HOST_IDENTITY_FILE}; deploy-agent install makes it)`,
  );
  if (problem) lines.push(`warning: ${problem}`);
  if (state.suspended) {
    const s = state.suspended;
    lines.push(
      `SUSPENDED since ${s.since} (${age(s.since, Date.now())}): ${s.reason}${s.newestRevision ? `; newest revision ${s.newestRevision.slice(0, 12)} waits for deploy-agent resume` : ""}`,
    );
  }
  if (state.pinned) {
    const p = state.pinned;
    lines.push(
      `PINNED at ${p.revision.slice(0, 12)} by ${p.by} since ${p.since}, meant until ${p.until}: ${p.reason}${p.newestRevision ? `; newest revision ${p.newestRevision.slice(0, 12)} waits for deploy-agent unpin` : ""}`,
    );
  }
  if (state.lastRun) {
    lines.push(
      `last run: ${state.lastRun.result} at ${state.lastRun.revision.slice(0, 12)}, ${age(state.lastRun.at, now)}`,
    );
  }
  for (const s of steps) {
    const applied = s.lastAppliedRevision ? s.lastAppliedRevision.slice(0, 12) : "never applied";
    const last = s.lastResult
      ? `${s.lastResult.outcome} ${age(s.lastResult.at, now)}${s.lastResult.outcome === "failed" ? `: ${s.lastResult.message}` : ""}`
      : "no attempt yet";
    lines.push(`  ${s.name} (${s.kind}): applied ${applied}; last ${last}`);
  }
  for (const o of orphaned) {
    lines.push(
      `  ${o.name}: orphaned (no longer in the manifest; its state is kept), applied ${o.lastAppliedRevision?.slice(0, 12) ?? "never"}`,
    );
  }
  out(`${lines.join("\n")}\n`);
  return 0;
}
