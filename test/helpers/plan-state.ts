import { emptyState, type State } from "../../src/state/state.js";

/** State where each named step was applied at a revision, maybe with a failed attempt after it. */
export function stateWith(entries: Record<string, { applied?: string; failedAt?: string }>): State {
  const state = emptyState("lxctest");
  for (const [name, e] of Object.entries(entries)) {
    state.steps[name] = {
      lastAppliedRevision: e.applied,
      history: [],
      lastResult: e.failedAt
        ? {
            outcome: "failed",
            revision: e.failedAt,
            reason: "COMMAND_FAILED",
            message: "x",
            at: "",
            durationMs: 1,
            items: [],
          }
        : undefined,
    };
  }
  return state;
}
