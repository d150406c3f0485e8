import { z } from "zod";
import { type GiteaStatusTarget, giteaStatus, schema as giteaStatusSchema } from "./gitea-status.js";
import { type MatrixTarget, matrix, schema as matrixSchema } from "./matrix.js";
import type { TargetKind } from "./types.js";
import { type WebhookTarget, webhook, schema as webhookSchema } from "./webhook.js";

/** The notify target kinds: a schema and a kind per file, one line each here. */
export const targetSchema = z.discriminatedUnion("kind", [giteaStatusSchema, webhookSchema, matrixSchema]);

export type Target = GiteaStatusTarget | WebhookTarget | MatrixTarget;

const KINDS: { [K in Target["kind"]]: TargetKind<Extract<Target, { kind: K }>> } = {
  "gitea-status": giteaStatus,
  webhook,
  matrix,
};

export const kindOf = (t: Target) => KINDS[t.kind] as TargetKind<Target>;

/**
 * Each target's name, for /status and metric labels: its `name`, else its kind, with -2, -3, … for the
 * second and later target of a kind.
 */
export function targetNames(targets: readonly Target[]): string[] {
  const seen = new Map<string, number>();
  return targets.map((t) => {
    const n = (seen.get(t.kind) ?? 0) + 1;
    seen.set(t.kind, n);
    return t.name ?? (n === 1 ? t.kind : `${t.kind}-${n}`);
  });
}
