import type { Logger } from "pino";
import type { HostOverrides } from "../manifest/at-revision.js";
import type { LoadOptions } from "../manifest/load.js";
import type { Manifest } from "../manifest/schema.js";
import type { Repo } from "../source/open-repo.js";
import type { Trigger } from "../state/history-record.js";
import type { Pin } from "../state/state.js";

/** What one deploy run (pipeline.ts) is given: the host, what to deploy, how, and whom to tell. */
export interface DeployOptions {
  /** The manifest the process runs with: from its file at start (host, listener, clone, state). */
  manifest: Manifest;
  /**
   * The manifest's path inside the repository, when it lives there: each run then applies the manifest of
   * the revision it deploys. Absent (a manifest outside the repository, `--config` for staging and tests):
   * `manifest` is applied as it is.
   */
  manifestPath?: string | undefined;
  /** Restart-only settings the host sets outside the manifest (serve's environment and flags). */
  overrides?: HostOverrides | undefined;
  /** How a manifest read from git is interpolated (env file, --root). */
  load?: LoadOptions | undefined;
  /**
   * Told the revision a run is about, as soon as it is known and before it is verified: a run refused or
   * ended before its steps (unsigned, history rewritten, an invalid manifest) is reported on that commit.
   */
  onRevision?: ((revision: string) => void) | undefined;
  /**
   * Told the revision a run is about to deploy (verified), before anything of it is applied; never by a
   * suspended host's run, which deploys nothing.
   */
  onStart?: ((revision: string) => void) | undefined;
  /** Told the manifest a run applies, once it validated. */
  onManifest?: ((manifest: Manifest) => void) | undefined;
  repoDir: string;
  stateDir: string;
  /** Prefix for every host path a step touches; "" for the real host. */
  root: string;
  dryRun: boolean;
  /** What started the run (push, poll, an operator…): kept in the deploy history. */
  trigger: Trigger;
  fetch: boolean;
  all: boolean;
  only: readonly string[];
  /** Steps that run whatever changed (self-healing drift). */
  force?: readonly string[] | undefined;
  lockWaitMs: number;
  log: Logger;
  /** When aborted (daemon shutdown), the running step finishes and the rest are skipped. */
  stop?: AbortSignal | undefined;
  /** When aborted (the shutdown grace period is over), the running step is cancelled too. */
  abort?: AbortSignal | undefined;
  /**
   * The operator takes a branch whose history was rewritten (`run --accept-rewrite`): with repo.verify on,
   * a revision that does not descend from the last one run is otherwise refused.
   */
  acceptRewrite?: boolean | undefined;
  /**
   * The operator's pin (`deploy-agent pin`): deploy this revision, whatever the tip, and hold the host there
   * (state.pinned, written before the steps). It is verified, never checked for descent: going back is
   * its purpose.
   */
  pin?: Pin | undefined;
  /**
   * `deploy-agent unpin`: the pin is cleared and the tip deployed. Whether there is a pin is read under the
   * deploy lock, with the state the run then changes: a host found not pinned is left as it is (nothing
   * fetched, deployed or recorded) and the run returns NotPinned, so two operators unpinning at once make one
   * unpin, never an unpin and a deploy of whatever the tip is by then.
   */
  unpin?: boolean | undefined;
  /**
   * A preview (a pull request's head, fetched apart from the branch): this revision, dry-run against the
   * host as it is. Not verified (a pull request may be unsigned) — so refused unless dryRun; the pin is
   * ignored, and no request leaves with the host's credentials (the context is offline).
   */
  preview?: string | undefined;
  /** An already opened clone (the daemon keeps one between runs); default: open and check repoDir. */
  repo?: Repo | undefined;
}
