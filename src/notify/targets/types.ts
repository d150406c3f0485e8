import type { DeployEvent } from "../events.js";

/**
 * One kind of notify target (`notify.targets[].kind`): its manifest schema, which events it takes and the
 * request one event makes. Adding a kind is one file in this folder plus one line in ./index.ts. The kind
 * builds a payload; the notifier's send path serializes it, passes it through the redaction point and
 * only then signs and sends it, so no kind can send a text that skipped redaction.
 */

/** The request one event makes, before its body is serialized and redacted. */
export interface TargetRequest {
  method: "POST" | "PUT";
  url: string;
  headers: Record<string, string>;
  /** Serialized as JSON and redacted by the send path. */
  payload: unknown;
}

export interface TargetKind<T extends { kind: string }> {
  /**
   * `commit-status`: run.started and the outcome once per revision and state (a Gitea commit status);
   * `notices`: the events worth a line (outcomes on change, repeats, rollbacks, jobs, drift).
   */
  takes: "commit-status" | "notices";
  request(target: T, event: DeployEvent, host: string): TargetRequest;
  /** Headers computed over the final (redacted) body, such as a signature. */
  sign?(target: T, body: string): Record<string, string>;
  /** What sending would do, one line (dry runs print it). */
  describe(target: T, event: DeployEvent, host: string): string;
}

/** Target names: letters, digits, `.`, `_`, `-` (they are metric labels and /status keys). */
export const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
