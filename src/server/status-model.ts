import { z } from "zod";

/**
 * The one definition of the daemon's `/status` document: the agent builds it as this type, `/status` serves
 * it, and `fleet` reads other hosts' answers with it. `deploy-agent status --json` is made of the same parts.
 *
 * Read leniently across versions: a field a newer agent adds is ignored (z.object drops what it does not
 * know), and closed sets a newer agent may extend (outcomes, results, reasons) are plain strings. A field
 * of the wrong type, a timestamp that is not an ISO date-time, a count that is not a whole number from 0 to
 * 2^53 - 1, a number that is not finite: the document is refused, with the field named.
 */

/** A commit id as git prints it (SHA-1 or SHA-256): anything else from a host never reaches git's argv. */
const revision = z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/, "not a commit id");
/** Every time the agent writes is Date#toISOString: a year of four digits, never negative. */
const timestamp = z.iso.datetime();
const count = z.int().nonnegative();
const duration = z.number().nonnegative();

const stepItem = z.object({ id: z.string(), outcome: z.string(), detail: z.string().optional() });

const stepResult = z.object({
  outcome: z.string(),
  revision: z.string(),
  reason: z.string(),
  code: z.string().optional(),
  message: z.string(),
  at: timestamp,
  durationMs: duration,
  items: z.array(stepItem),
});

/** Per step of the manifest, what the host's state says of it (null where it says nothing). */
export const stepStatusSchema = z.object({
  name: z.string(),
  kind: z.string(),
  lastAppliedRevision: revision.nullable(),
  lastAttemptedRevision: z.string().nullable(),
  lastResult: stepResult.nullable(),
});

/** Steps the state knows that the manifest no longer has. */
export const orphanedStepSchema = z.object({
  name: z.string(),
  lastAppliedRevision: z.string().nullable(),
  lastResult: stepResult.nullable(),
});

export const suspendedSchema = z.object({
  reason: z.string(),
  since: timestamp,
  newestRevision: z.string().optional(),
});

export const pinnedSchema = z.object({
  revision,
  reason: z.string(),
  since: timestamp,
  until: timestamp,
  by: z.string(),
  newestRevision: z.string().optional(),
});

const health = z.object({ ok: z.boolean(), reason: z.string().optional() });

const taskState = z.object({ task: z.string(), reasons: z.array(z.string()), requests: count });

const driftItem = z.object({
  id: z.string(),
  state: z.string(),
  detail: z.string().optional(),
  patch: z.string().optional(),
  /** Drift no run can put back (see DriftItem): no self-heal is asked for it. */
  stalled: z.literal(true).optional(),
});

const runStep = z.object({
  name: z.string(),
  kind: z.string(),
  outcome: z.string(),
  reason: z.string(),
  message: z.string(),
  durationMs: duration,
  error: z.object({ code: z.string(), message: z.string(), hint: z.string().optional() }).nullable(),
  items: z.array(stepItem),
});

export const serveStatusSchema = z.object({
  schema: z.literal("deploy-agent/serve-status@1"),
  host: z.string(),
  dryRun: z.boolean(),
  branch: z.string(),
  /** The revision the host last ran (its state's lastRun). */
  deployedRevision: revision.nullable(),
  suspended: suspendedSchema.nullable(),
  pinned: pinnedSchema.nullable(),
  /** The last result of each watching host job, by its command. */
  jobs: z.record(z.string(), z.object({ message: z.string(), gauge: z.number().optional(), at: timestamp })),
  configuration: z.object({ valid: z.boolean(), source: z.string(), pendingRestart: z.array(z.string()) }),
  stateProblem: z.string().nullable(),
  health,
  /** The deploy's place in the runner. */
  queue: z.object({
    running: z.boolean(),
    pending: z.boolean(),
    requests: count,
    reasons: z.array(z.string()),
    runsStarted: count,
  }),
  /** The runner itself: what runs, what waits. */
  runner: z.object({
    running: taskState.extend({ since: timestamp }).nullable(),
    waiting: z.array(taskState),
  }),
  previews: z.object({
    pending: count,
    maxPending: count,
    last: z.array(
      z.object({
        number: count,
        revision: z.string().nullable(),
        state: z.string(),
        description: z.string(),
        posted: z.boolean(),
        at: timestamp,
      }),
    ),
  }),
  steps: z.array(stepStatusSchema),
  orphanedSteps: z.array(orphanedStepSchema),
  /** The last drift check; of each step only the items that are not in sync. */
  drift: z
    .object({
      at: timestamp,
      steps: z.array(
        z.object({
          name: z.string(),
          kind: z.string(),
          revision: z.string().nullable(),
          state: z.string(),
          items: z.array(driftItem),
        }),
      ),
    })
    .nullable(),
  lastRun: z
    .object({
      revision: z.string(),
      result: z.string(),
      dryRun: z.boolean(),
      durationMs: duration,
      warnings: z.array(z.string()),
      steps: z.array(runStep),
      finishedAt: timestamp,
    })
    .nullable(),
  /** The error that ended the last run before its steps; null after a run that got to them. */
  lastError: z.object({ code: z.string(), message: z.string(), at: timestamp }).nullable(),
  notifications: z.object({
    queued: count,
    targets: z.record(
      z.string(),
      z.object({
        lastSuccessAt: timestamp.nullable(),
        lastFailureAt: timestamp.nullable(),
        lastError: z.string().nullable(),
      }),
    ),
  }),
  process: z.object({ rss: count, heapTotal: count, heapUsed: count, external: count }),
});
export type ServeStatus = z.infer<typeof serveStatusSchema>;

/**
 * What `fleet` reads of a host's /status: the fields it uses, as the model says. pinned and jobs came after
 * the first agents, so a host without them still answers.
 */
export const fleetStatusSchema = serveStatusSchema
  .pick({
    deployedRevision: true,
    suspended: true,
    pinned: true,
    lastError: true,
    health: true,
    lastRun: true,
    steps: true,
    jobs: true,
  })
  .partial({ pinned: true, jobs: true });
export type FleetStatus = z.infer<typeof fleetStatusSchema>;

/** `deploy-agent status --json`: the host's state file, read on the host, in the model's parts. */
export const localStatusSchema = z.object({
  schema: z.literal("deploy-agent/status@1"),
  host: z.string(),
  stateDir: z.string(),
  stateProblem: z.string().nullable(),
  lastRun: z.object({ revision, result: z.string(), at: timestamp, durationMs: duration }).nullable(),
  suspended: suspendedSchema.nullable(),
  pinned: pinnedSchema.nullable(),
  steps: z.array(stepStatusSchema),
  orphanedSteps: z.array(orphanedStepSchema),
  ageRecipient: z.string().nullable(),
});
export type LocalStatus = z.infer<typeof localStatusSchema>;

/** The longest field path and message a refusal quotes: the keys are the sender's words. */
const PATH_MAX = 80;
const MESSAGE_MAX = 120;

/** Why a document is not a status, in one line: the first field refused and what is wrong with it. */
export function refusal(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "not a status";
  const at = issue.path.map(String).join(".").slice(0, PATH_MAX) || "the document";
  return `${at}: ${issue.message.slice(0, MESSAGE_MAX)}`;
}
