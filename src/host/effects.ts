/**
 * What a step did, or in a dry run would do. Steps never print; they record effects through their
 * context, and the report renders them. A dry run is the same apply with the context in describe mode.
 */
export type Effect =
  | {
      type: "write";
      path: string;
      mode: number;
      bytes: number;
      /** `created` when the target did not exist. */
      change: "created" | "modified";
      added: number;
      removed: number;
      /** Unified diff of text content, capped; absent for binary or secret-bearing content. */
      patch?: string;
    }
  | { type: "run"; argv: string[] }
  | { type: "validate"; path: string; argv: string[] }
  | { type: "restore"; path: string }
  | { type: "remove"; path: string }
  | { type: "copy"; from: string; to: string }
  | { type: "link"; path: string; target: string }
  | { type: "mkdir"; path: string; mode: number }
  | { type: "request"; method: string; url: string; detail?: string }
  | { type: "note"; message: string };

export type EffectRecorder = (effect: Effect) => void;
