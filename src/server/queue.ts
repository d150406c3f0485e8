import type { Logger } from "pino";

/**
 * One deploy at a time, coalescing: requests that arrive while a run is in progress collapse into a single
 * follow-up run (which fetches the newest origin/<branch> anyway). 100 pushes during a deploy → 1 more run.
 */
export interface QueueState {
  running: boolean;
  pending: boolean;
  /** Why the running (or pending) run was asked for. */
  reasons: string[];
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

export function createQueue(run: (reasons: string[]) => Promise<void>, log: Logger): DeployQueue {
  let running: Promise<void> | null = null;
  let runningSince: number | null = null;
  let pending: string[] = [];
  let current: string[] = [];
  let closed = false;
  let runsStarted = 0;
  let waiters: (() => void)[] = [];

  const settle = () => {
    if (running || pending.length) return;
    for (const w of waiters) w();
    waiters = [];
  };

  const start = () => {
    current = pending;
    pending = [];
    runsStarted++;
    runningSince = Date.now();
    running = run(current)
      .catch((err: unknown) => log.error({ err }, "deploy run crashed"))
      .finally(() => {
        running = null;
        runningSince = null;
        current = [];
        if (pending.length && !closed) start();
        else settle();
      });
  };

  return {
    request(reason) {
      if (closed) return;
      pending.push(reason);
      if (!running) start();
    },
    state: () => ({
      running: running !== null,
      pending: pending.length > 0,
      reasons: running ? current : pending,
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
      pending = [];
      if (running) await running;
      settle();
    },
  };
}
