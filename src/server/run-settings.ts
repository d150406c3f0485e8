import type { Logger } from "pino";
import type { HostOverrides } from "../manifest/at-revision.js";
import type { LoadOptions } from "../manifest/load.js";

/** Where and how the daemon's runs act on this host: what deploys, previews and the agent itself share. */
export interface HostRunSettings {
  /** The manifest's path in the clone: each run applies the deployed revision's manifest. */
  manifestPath?: string | undefined;
  /** Restart-only settings the host sets outside the manifest (see manifest/at-revision.ts). */
  overrides?: HostOverrides | undefined;
  load?: LoadOptions | undefined;
  repoDir: string;
  stateDir: string;
  root: string;
  /** A daemon in --dry-run records what it would do (and logs, instead of posting, what it would say). */
  dryRun: boolean;
  log: Logger;
}
