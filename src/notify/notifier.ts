import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { z } from "zod";
import { asAgentError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import type { RetryPolicy } from "../core/retry.js";
import { deliver, NOTIFY_RETRY } from "./deliver.js";
import type { DeployEvent } from "./events.js";
import { postedStatuses } from "./posted.js";
import { COMMIT_STATE, statusKey } from "./targets/gitea-status.js";
import { kindOf, type Target, targetNames, targetSchema } from "./targets/index.js";

/**
 * Notifications (`notify:` in the host manifest; none configured: nothing is sent). A Gitea commit status per
 * host (context deploy/<host>), a JSON event POSTed to a URL (signed like Flux's generic-hmac) and/or an
 * m.notice in a Matrix room; kinds in ./targets/. Sent once per host, revision and outcome; a failure that
 * repeats is sent again at most every repeatMinutes, with a count; a recovery always. Publishing never waits
 * and never throws: a bounded queue, each notice retried under NOTIFY_RETRY (./deliver.ts), errors logged
 * and counted. A deploy is never delayed or failed by a notifier. Every body leaves through `deliver`,
 * after the redaction point.
 */

export const notifySchema = z
  .strictObject({
    repeatMinutes: z.number().int().min(1).max(1440).default(60),
    queueLength: z.number().int().min(1).max(1000).default(100),
    targets: z.array(targetSchema).default([]),
  })
  .superRefine((n, ctx) => {
    const names = targetNames(n.targets);
    names.forEach((name, i) => {
      if (names.indexOf(name) !== i)
        ctx.addIssue({
          code: "custom",
          path: ["targets", i, "name"],
          message: `duplicate target name "${name}"`,
        });
    });
  })
  .prefault({});

export type NotifyConfig = z.infer<typeof notifySchema>;

/** What /status shows of the notifier: notices waiting, and each configured target's last sends. */
export interface NotifierStatus {
  queued: number;
  targets: Record<
    string,
    { lastSuccessAt: string | null; lastFailureAt: string | null; lastError: string | null }
  >;
}

export interface Notifier {
  /** Queues what the event should cause; never waits, never throws. */
  publish(event: DeployEvent): void;
  /** What publishing the event would send, one line per notice (dry runs print these). */
  describe(event: DeployEvent): string[];
  /** Resolves once the queue is empty and nothing is being sent, or after ms. */
  drain(ms: number): Promise<void>;
  status(): NotifierStatus;
}

interface Job {
  target: Target;
  name: string;
  event: DeployEvent;
}

/**
 * Events only a commit status records (a run with nothing to do, a push held by a pin, a held push a newer
 * one replaced): no notice, and no
 * bearing on the repeats and recoveries of the outcomes that are sent.
 */
const statusOnly = (event: DeployEvent) =>
  event.nothingToDo === true || event.event === "run.held" || event.event === "run.superseded";

export function createNotifier(opts: {
  config: () => NotifyConfig;
  host: string;
  log: Logger;
  /** The state directory, where the commit statuses posted are recorded (none: in memory only). */
  stateDir?: string | undefined;
  /** Counts every send by target name and result (sent, failed, dropped). */
  count?: (target: string, result: "sent" | "failed" | "dropped") => void;
  now?: () => number;
  /** The per-notice retry policy over NOTIFY_RETRY (tests shorten it). */
  retry?: Partial<RetryPolicy>;
  /** The backoff's jitter source (tests pass a seeded one). */
  random?: () => number;
}): Notifier {
  const now = opts.now ?? Date.now;
  const policy = { ...NOTIFY_RETRY, ...opts.retry };
  const queue: Job[] = [];
  /** The worker sending the queue, while there is one. */
  let working: Promise<void> | null = null;
  /** The last outcome sent (run.succeeded/failed/error), for repeats and recoveries. */
  let last: { event: DeployEvent["event"]; revision: string | null; sentAt: number; repeats: number } | null =
    null;
  /**
   * Gitea states posted per target and revision (./posted.ts): a target that missed a status is sent it
   * again, never one that has it, nor one a CLI run or the daemon before a restart sent it.
   */
  const posted = postedStatuses(opts.stateDir, opts.log);
  /** The commit-status jobs whose target was not posted `state` for the revision (`null`: any state). */
  const unsent = (jobs: Job[], revision: string | null, state: string | null) =>
    revision
      ? jobs.filter((j) => {
          const was = posted.get(j.name, revision);
          return state === null ? was === undefined : was !== state;
        })
      : [];
  const sends = new Map<string, NotifierStatus["targets"][string]>();

  /** Which targets the event goes to, after the once-per-revision-and-outcome and repeat rules. */
  function route(event: DeployEvent): { targets: Job[]; event: DeployEvent } {
    const config = opts.config().targets;
    const names = targetNames(config);
    const all = config.map((target, i) => ({ target, name: names[i] ?? target.kind, event }));
    const state = statusKey(event);
    const statuses = all.filter((j) => kindOf(j.target).takes === "commit-status");
    const notices = all.filter((j) => kindOf(j.target).takes === "notices");
    if (event.event === "run.started") {
      return { targets: unsent(statuses, event.revision, null), event };
    }
    if (!state) return { targets: notices, event };
    const statusNow = unsent(statuses, event.revision, state);
    if (statusOnly(event)) return { targets: statusNow, event };
    const failure = event.event !== "run.succeeded";
    if (!failure) {
      const news = !last || last.event !== event.event || last.revision !== event.revision;
      return { targets: [...statusNow, ...(news ? notices : [])], event };
    }
    if (last && last.event === event.event && now() - last.sentAt < opts.config().repeatMinutes * 60_000) {
      return { targets: statusNow, event };
    }
    const repeats = last && last.event === event.event ? last.repeats : 0;
    const sent = repeats ? { ...event, repeats } : event;
    return { targets: [...statusNow, ...notices].map((j) => ({ ...j, event: sent })), event: sent };
  }

  function rememberPosted({ name, event }: Job) {
    const state = statusKey(event);
    if (event.revision && state) posted.remember(name, event.revision, state);
  }

  /**
   * A commit status this target never got (its send failed, or it was dropped) is not posted: the next run
   * sends it, to this target alone.
   */
  function unposted({ target, name, event }: Job) {
    const state = statusKey(event);
    if (kindOf(target).takes === "commit-status" && event.revision && state)
      posted.forget(name, event.revision, state);
  }

  function remember(event: DeployEvent, sentNotices: boolean) {
    const state = COMMIT_STATE[event.event];
    if (event.event === "run.started" || !state) return;
    if (sentNotices) last = { event: event.event, revision: event.revision, sentAt: now(), repeats: 0 };
    else if (last && last.event === event.event) last.repeats++;
  }

  function record(name: string, ok: boolean, problem = "") {
    const at = new Date(now()).toISOString();
    const was = sends.get(name) ?? { lastSuccessAt: null, lastFailureAt: null, lastError: null };
    sends.set(
      name,
      ok ? { ...was, lastSuccessAt: at } : { ...was, lastFailureAt: at, lastError: redact(problem) },
    );
    opts.count?.(name, ok ? "sent" : "failed");
  }

  /** Sends one job (./deliver.ts) and records how it went. */
  async function send({ target, name, event }: Job): Promise<void> {
    try {
      await deliver(target, event, opts.host, { policy, random: opts.random });
    } catch (err) {
      const e = asAgentError(err);
      record(name, false, e.message);
      unposted({ target, name, event });
      opts.log.warn(
        { target: name, event: event.event, code: e.code, problem: e.message },
        "notification not delivered",
      );
      return;
    }
    record(name, true);
    const state = statusKey(event);
    if (kindOf(target).takes === "commit-status" && event.revision && state)
      await posted.taken(name, event.revision, state);
  }

  /**
   * Starts a worker unless one is active or there is nothing to send. The worker's handle is cleared only
   * after it is set (a promise's callbacks never run synchronously), and a job queued after the worker saw
   * an empty queue starts the next one: the queue never stalls.
   */
  function kick() {
    if (working || queue.length === 0) return;
    const worker = (async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        await send(job).catch((err: unknown) => opts.log.error({ err }, "notification not sent"));
      }
    })();
    working = worker;
    void worker.finally(() => {
      if (working === worker) working = null;
      kick();
    });
  }

  return {
    publish(event) {
      try {
        const routed = route(event);
        // Only what went to a commit status: a run.started left out (the revision has its status already,
        // as every poll and every push held by a pin) must not make the same outcome look new and post it again.
        for (const job of routed.targets)
          if (kindOf(job.target).takes === "commit-status") rememberPosted(job);
        if (!statusOnly(event))
          remember(
            event,
            routed.targets.some((j) => kindOf(j.target).takes === "notices"),
          );
        for (const job of routed.targets) {
          if (queue.length >= opts.config().queueLength) {
            const dropped = queue.shift();
            if (dropped) {
              opts.count?.(dropped.name, "dropped");
              unposted(dropped);
            }
          }
          queue.push(job);
        }
      } catch (err) {
        opts.log.error({ err }, "notification not queued");
      }
      kick();
    },
    describe(event) {
      return route(event).targets.map((j) => kindOf(j.target).describe(j.target, j.event, opts.host));
    },
    async drain(ms) {
      // An unref'd bound: with nothing to send, a ref'd timer kept a stopping daemon alive for all of it.
      const deadline = sleep(ms, undefined, { ref: false }).then(() => false);
      // A worker that ends while jobs wait hands over to the next one: wait for that one too.
      for (let worker = working; worker; worker = working) {
        const ended = await Promise.race([worker.then(() => true), deadline]);
        if (!ended || working === worker) return;
      }
    },
    status() {
      const empty = { lastSuccessAt: null, lastFailureAt: null, lastError: null };
      const names = targetNames(opts.config().targets);
      return {
        queued: queue.length,
        targets: Object.fromEntries(names.map((n) => [n, sends.get(n) ?? empty])),
      };
    },
  };
}
