import type { Logger } from "pino";

/**
 * One deploy at a time, coalescing: requests that arrive while a run is in progress collapse into a single
 * follow-up run (which fetches the newest origin/<branch> anyway). 100 pushes during a deploy → 1 more run.
 */
export interface QueueState {
  running: boolean;
  pending: boolean;
  /** Why the running (or pending) run was asked for: the newest few, however many came. */
  reasons: string[];
  /** How many requests the running (or pending) run stands for. */
  requests: number;
  runsStarted: number;
  runningSince: number | null;
}

export interface DeployQueue {
  request(reason: string): void;
  state(): QueueState;
  /** Resolves when no run is in progress and none is pending. */
  idle(): Promise<void>;
  /** Refuses new requests, drops the pending one and waits for the running run. */
  close(): Promise<void>;
}

/** Reasons kept per run: 40,000 replays of a push must cost what one does. */
export const MAX_REASONS = 10;

interface Requests {
  reasons: string[];
  count: number;
}

const none = (): Requests => ({ reasons: [], count: 0 });

export function createQueue(
  run: (reasons: string[], count: number) => Promise<void>,
  log: Logger,
): DeployQueue {
  let running: Promise<void> | null = null;
  let runningSince: number | null = null;
  let pending = none();
  let current = none();
  let closed = false;
  let runsStarted = 0;
  let waiters: (() => void)[] = [];

  const settle = () => {
    if (running || pending.count) return;
    for (const w of waiters) w();
    waiters = [];
  };

  const start = () => {
    current = pending;
    pending = none();
    runsStarted++;
    runningSince = Date.now();
    running = run(current.reasons, current.count)
      .catch((err: unknown) => log.error({ err }, "deploy run crashed"))
      .finally(() => {
        running = null;
        runningSince = null;
        current = none();
        if (pending.count && !closed) start();
        else settle();
      });
  };

  return {
    request(reason) {
      if (closed) return;
      pending.count++;
      if (!pending.reasons.includes(reason))
        pending.reasons = [reason, ...pending.reasons].slice(0, MAX_REASONS);
      if (!running) start();
    },
    state: () => ({
      running: running !== null,
      pending: pending.count > 0,
      reasons: (running ? current : pending).reasons,
      requests: (running ? current : pending).count,
      runsStarted,
      runningSince,
    }),
    idle: () =>
      new Promise((resolve) => {
        waiters.push(resolve);
        settle();
      }),
    async close() {
      closed = true;
      pending = none();
      if (running) await running;
      settle();
    },
  };
}
