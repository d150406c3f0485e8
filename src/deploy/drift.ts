import type { Logger } from "pino";
import type { Effect } from "../host/effects.js";
import type { Manifest } from "../manifest/schema.js";
import { openRepo, type Repo } from "../source/open-repo.js";
import { loadSnapshot, type Snapshot } from "../source/snapshot.js";
import { readState } from "../state/read-state.js";
import { createStepContext } from "../steps/context.js";
import { unreadable } from "../steps/drift.js";
import { kindOf } from "../steps/index.js";
import type { DriftItem } from "../steps/types.js";

/**
 * Drift: for every step, what is live against what git says at the revision the step last applied (read
 * from git objects), through a dry-run context: it reads files and room state and can write nothing.
 */

export interface StepDrift {
  name: string;
  kind: string;
  revision: string | null;
  /** drifted if any item drifted; unknown if none did but one could not be told; in-sync otherwise. */
  state: "in-sync" | "drifted" | "unknown";
  items: DriftItem[];
}

export interface DriftReport {
  schema: "deploy-agent/drift@1";
  host: string;
  at: string;
  steps: StepDrift[];
}

export async function checkDrift(opts: {
  manifest: Manifest;
  repoDir: string;
  stateDir: string;
  root: string;
  log: Logger;
  only?: readonly string[];
  repo?: Repo;
}): Promise<DriftReport> {
  const { manifest } = opts;
  const repo = opts.repo ?? (await openRepo(opts.repoDir, manifest.repo.remote, manifest.repo.branch));
  const { state } = await readState(opts.stateDir, manifest.host);
  const snapshots = new Map<string, Snapshot>();
  const steps: StepDrift[] = [];
  for (const step of manifest.steps) {
    if (opts.only?.length && !opts.only.includes(step.name)) continue;
    const revision = state.steps[step.name]?.lastAppliedRevision ?? null;
    if (!revision) {
      steps.push({
        ...base(step),
        revision,
        state: "unknown",
        items: [{ id: step.name, state: "unknown", detail: "never applied on this host" }],
      });
      continue;
    }
    if (!snapshots.has(revision)) snapshots.set(revision, loadSnapshot(repo, revision));
    const effects: Effect[] = [];
    const ctx = createStepContext({
      dryRun: true,
      root: opts.root,
      source: snapshots.get(revision) as Snapshot,
      log: opts.log.child({ step: step.name }),
      signal: AbortSignal.timeout(step.timeoutSeconds * 1000),
      commands: manifest.commands,
      record: (e) => effects.push(e),
    });
    const items = await kindOf(step)
      .drift(step, ctx)
      .catch((err: unknown): DriftItem[] => [unreadable(step.name, err)]);
    const verdict = items.some((i) => i.state === "drifted")
      ? "drifted"
      : items.some((i) => i.state === "unknown")
        ? "unknown"
        : "in-sync";
    steps.push({ ...base(step), revision, state: verdict, items });
  }
  return { schema: "deploy-agent/drift@1", host: manifest.host, at: new Date().toISOString(), steps };
}

const base = (step: { name: string; kind: string }) => ({ name: step.name, kind: step.kind });

export function renderDrift(report: DriftReport): string {
  const lines = [`drift on ${report.host}:`];
  for (const s of report.steps) {
    lines.push(
      `[${s.state}] ${s.name} (${s.kind})${s.revision ? ` against ${s.revision.slice(0, 12)}` : ""}`,
    );
    for (const i of s.items.filter((x) => x.state !== "in-sync")) {
      lines.push(`    ${i.state}: ${i.id}${i.detail ? `: ${i.detail}` : ""}`);
      if (i.patch) lines.push(...i.patch.split("\n").map((l) => `        ${l}`));
    }
  }
  return `${lines.join("\n")}\n`;
}
