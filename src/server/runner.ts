import type { Logger } from "pino";
import type { ErrorCode } from "../core/errors.js";
import type { Trigger as HistoryTrigger } from "../state/history-record.js";

/**
 * The one runner of a host: everything the daemon does to the host (deploy runs, drift checks, self-heal,
 * host jobs) runs here, one task at a time, so nothing reads a half-applied step or interleaves with a
 * deploy. Requests coalesce per task: a task waits at most once, standing for every request that came
 * while it waited (100 pushes during a deploy: 1 more run), so memory is a function of the task list,
 * never of how many requests arrive. Deploys go first among the waiting; the rest in the order asked.
 */

/** What the runner runs: a deploy, a drift check, a host job by its command, a pull request's preview. */
export type Task = "deploy" | "drift" | `job:${string}` | `preview:${number}`;

/** Why a task was asked for. Each kind has one text, shown in /status as the task's reasons. */
export type Trigger =
  | { kind: "push"; after: string; delivery: string }
  | { kind: "poll" }
  /** The deploy the daemon starts with, and the drift check after it. */
  | { kind: "start-up"; task: "deploy" | "drift" }
  /** A drift check's or host job's timer. */
  | { kind: "interval" }
  | { kind: "self-heal"; steps: string[] }
  | { kind: "retry"; after: ErrorCode }
  | { kind: "pull-request"; number: number; action: string; head: string }
  /** A preview a deploy stopped, asked for again. */
  | { kind: "after-deploy" };

export function reasonOf(t: Trigger): string {
  switch (t.kind) {
    case "push":
      return `push ${t.after.slice(0, 12)} (delivery ${t.delivery})`;
    case "poll":
      return "poll";
    case "start-up":
      return t.task === "deploy" ? "start-up reconcile" : "start-up";
    case "interval":
      return "interval";
    case "self-heal":
      return `self-heal ${t.steps.join(", ")}`;
    case "retry":
      return `retry after ${t.after}`;
    case "pull-request":
      return `pull request #${t.number} ${t.action} ${t.head.slice(0, 12)}`;
    case "after-deploy":
      return "after a deploy";
  }
}

/**
 * A deploy's triggers (newest first) as its history record's trigger: a run that stands for several
 * requests is recorded as its newest push if it has one (what an operator looks for), else its newest request.
 */
export function historyTrigger(triggers: readonly Trigger[]): HistoryTrigger {
  const t = triggers.find((x) => x.kind === "push") ?? triggers[0];
  switch (t?.kind) {
    case "push":
      return { kind: "push", delivery: t.delivery };
    case "poll":
      return { kind: "poll" };
    case "self-heal":
      return { kind: "self-heal", steps: t.steps };
    case "retry":
      return { kind: "retry", after: t.after };
    default:
      return { kind: "start-up" };
  }
}

export interface TaskState {
  task: Task;
  /** Why it was asked for: the newest few, however many came. */
  reasons: string[];
  /** How many requests it stands for. */
  requests: number;
}

export interface RunnerState {
  running: (TaskState & { since: string }) | null;
  waiting: TaskState[];
  /** Tasks started since the daemon started, by task. */
  started: Record<string, number>;
}

export interface Runner {
  request(task: Task, trigger: Trigger): void;
  state(): RunnerState;
  /**
   * How long the running task has run (null: none runs), on the monotonic clock: a wall clock stepped back
   * or forward (NTP, a container started with a wrong clock) neither hides a stuck task nor makes one up.
   */
  runningMs(): number | null;
  /** Resolves when nothing runs and nothing waits. */
  idle(): Promise<void>;
  /** Refuses new requests, drops the waiting ones and waits for the running task. */
  close(): Promise<void>;
}

/** Reasons kept per task: 40,000 replays of a push must cost what one does. */
export const MAX_REASONS = 10;

/** The task that goes before the others. */
export const DEPLOY = "deploy" satisfies Task;

/** Runs a task for its triggers (newest first, at most MAX_REASONS) and the count of requests they stand for. */
export type TaskHandler = (triggers: Trigger[], count: number) => Promise<void>;

interface Waiting {
  triggers: Trigger[];
  count: number;
}

export function createRunner(
  handlerOf: (task: Task) => TaskHandler | undefined,
  log: Logger,
  monotonicMs: () => number = () => performance.now(),
): Runner {
  const waiting = new Map<Task, Waiting>();
  let running: (TaskState & { since: string }) | null = null;
  /** When the running task started, on monotonicMs. */
  let startedAt = 0;
  let current: Promise<void> | null = null;
  let closed = false;
  const started: Record<string, number> = {};
  let waiters: (() => void)[] = [];

  const settle = () => {
    if (running || waiting.size) return;
    for (const w of waiters) w();
    waiters = [];
  };

  const next = (): Task | undefined => (waiting.has(DEPLOY) ? DEPLOY : waiting.keys().next().value);

  const start = () => {
    const task = next();
    if (task === undefined || running || closed) return settle();
    const { triggers, count } = waiting.get(task) ?? { triggers: [], count: 0 };
    waiting.delete(task);
    const handler = handlerOf(task);
    if (!handler) {
      log.error({ task }, "no handler for a requested task");
      return start();
    }
    started[task] = (started[task] ?? 0) + 1;
    running = { task, reasons: triggers.map(reasonOf), requests: count, since: new Date().toISOString() };
    startedAt = monotonicMs();
    current = handler(triggers, count)
      .catch((err: unknown) => log.error({ err, task }, "task crashed"))
      .finally(() => {
        running = null;
        current = null;
        start();
      });
  };

  return {
    request(task, trigger) {
      if (closed) return;
      const w = waiting.get(task) ?? { triggers: [], count: 0 };
      w.count++;
      // Coalesced by what they say: the same reason twice is kept once.
      const reason = reasonOf(trigger);
      if (!w.triggers.some((t) => reasonOf(t) === reason))
        w.triggers = [trigger, ...w.triggers].slice(0, MAX_REASONS);
      waiting.set(task, w);
      if (!running) start();
    },
    state: () => ({
      running: running && { ...running },
      waiting: [...waiting].map(([task, w]) => ({
        task,
        reasons: w.triggers.map(reasonOf),
        requests: w.count,
      })),
      started: { ...started },
    }),
    runningMs: () => (running ? monotonicMs() - startedAt : null),
    idle: () =>
      new Promise((resolve) => {
        waiters.push(resolve);
        settle();
      }),
    async close() {
      closed = true;
      waiting.clear();
      while (current) await current;
      settle();
    },
  };
}
