import { realpath } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { AgentError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import type { SecretSource } from "../gitea/webhook-secret.js";
import { rooted } from "../host/host-fs.js";
import { type LoadedManifest, type LoadOptions, loadManifest } from "../manifest/load.js";

/** Flags shared by the commands, and how they turn into paths: manifest paths go under --root, flag paths do not. */
export interface CommonFlags {
  config?: string | undefined;
  root?: string | undefined;
  repo?: string | undefined;
  stateDir?: string | undefined;
  envFile?: string | undefined;
  json: boolean;
  logLevel?: string | undefined;
}

export interface Resolved {
  loaded: LoadedManifest;
  root: string;
  repoDir: string;
  stateDir: string;
  /** The manifest's path inside the clone, when it lives there: runs then take it from the deployed revision. */
  manifestPath: string | undefined;
  /** How a manifest is interpolated: --env-file and --root, as for the file. */
  load: LoadOptions;
  /** A manifest host path as seen under --root. */
  under(hostPath: string): string;
}

export async function resolve(flags: CommonFlags): Promise<Resolved> {
  const config = flags.config ?? process.env.DEPLOY_AGENT_CONFIG;
  if (!config) {
    throw new AgentError("USAGE", "no manifest given", {
      hint: "pass --config config/<host>.yaml (or set DEPLOY_AGENT_CONFIG)",
    });
  }
  const root = flags.root ? path.resolve(flags.root) : "";
  const under = rooted(root);
  const load = { envFile: flags.envFile ? path.resolve(flags.envFile) : undefined, root };
  const loaded = await loadManifest(path.resolve(config), load);
  const { manifest } = loaded;
  const repoDir = flags.repo ? path.resolve(flags.repo) : under(manifest.repo.path);
  return {
    loaded,
    root,
    repoDir,
    stateDir: flags.stateDir ? path.resolve(flags.stateDir) : under(manifest.stateDir),
    manifestPath: await insideRepo(repoDir, loaded.file),
    load,
    under,
  };
}

/** The file's path relative to the repository, if it is inside it (symlinks resolved on both sides). */
async function insideRepo(repoDir: string, file: string): Promise<string | undefined> {
  const real = (p: string) => realpath(p).catch(() => p);
  const rel = path.relative(await real(repoDir), await real(file));
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel.split(path.sep).join("/") : undefined;
}

/** Where the webhook secret of a resolved manifest is to be found. */
export function secretSource(r: Resolved): SecretSource {
  return { manifest: r.loaded.manifest, env: r.loaded.env, envFile: r.loaded.envFile, under: r.under };
}

/** One-shot commands log to stderr so that stdout carries only the report. */
export function commandLogger(flags: CommonFlags, r: Resolved | null, opts: { logFile: boolean }): Logger {
  const level = flags.logLevel ?? r?.loaded.manifest.log.level ?? "info";
  const file = opts.logFile && r?.loaded.manifest.log.file ? r.under(r.loaded.manifest.log.file) : undefined;
  return createLogger({ level, fd: 2, file, json: flags.json });
}
