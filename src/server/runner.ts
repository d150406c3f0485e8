import type { Logger } from "pino";

/**
 * The one runner of a host: everything the daemon does to the host (deploy runs, drift checks, self-heal,
 * host jobs) runs here, one task at a time, so nothing reads a half-applied step or interleaves with a
 * deploy. Requests coalesce per task: a task waits at most once, standing for every request that came
 * while it waited (100 pushes during a deploy: 1 more run), so memory is a function of the task list,
 * never of how many requests arrive. Deploys go first among the waiting; the rest in the order asked.
 */

export interface TaskState {
  task: string;
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
  request(task: string, reason: string): void;
  state(): RunnerState;
  /** Resolves when nothing runs and nothing waits. */
  idle(): Promise<void>;
  /** Refuses new requests, drops the waiting ones and waits for the running task. */
  close(): Promise<void>;
}

/** Reasons kept per task: 40,000 replays of a push must cost what one does. */
export const MAX_REASONS = 10;

/** The task that goes before the others. */
export const DEPLOY = "deploy";

export type TaskHandler = (reasons: string[], count: number) => Promise<void>;

export function createRunner(handlerOf: (task: string) => TaskHandler | undefined, log: Logger): Runner {
  const waiting = new Map<string, { reasons: string[]; count: number }>();
  let running: (TaskState & { since: string }) | null = null;
  let current: Promise<void> | null = null;
  let closed = false;
  const started: Record<string, number> = {};
  let waiters: (() => void)[] = [];

  const settle = () => {
    if (running || waiting.size) return;
    for (const w of waiters) w();
    waiters = [];
  };

  const next = (): string | undefined => (waiting.has(DEPLOY) ? DEPLOY : waiting.keys().next().value);

  const start = () => {
    const task = next();
    if (task === undefined || running || closed) return settle();
    const { reasons, count } = waiting.get(task) ?? { reasons: [], count: 0 };
    waiting.delete(task);
    const handler = handlerOf(task);
    if (!handler) {
      log.error({ task }, "no handler for a requested task");
      return start();
    }
    started[task] = (started[task] ?? 0) + 1;
    running = { task, reasons, requests: count, since: new Date().toISOString() };
    current = handler(reasons, count)
      .catch((err: unknown) => log.error({ err, task }, "task crashed"))
      .finally(() => {
        running = null;
        current = null;
        start();
      });
  };

  return {
    request(task, reason) {
      if (closed) return;
      const w = waiting.get(task) ?? { reasons: [], count: 0 };
      w.count++;
      if (!w.reasons.includes(reason)) w.reasons = [reason, ...w.reasons].slice(0, MAX_REASONS);
      waiting.set(task, w);
      if (!running) start();
    },
    state: () => ({
      running: running && { ...running },
      waiting: [...waiting].map(([task, w]) => ({ task, reasons: w.reasons, requests: w.count })),
      started: { ...started },
    }),
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
