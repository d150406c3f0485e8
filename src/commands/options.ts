import { realpath } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { AgentError, asAgentError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import type { SecretSource } from "../gitea/webhook-secret.js";
import { rooted } from "../host/host-fs.js";
import { manifestSha256 } from "../manifest/at-revision.js";
import { type LoadedManifest, type LoadOptions, loadManifest, parseManifest } from "../manifest/load.js";
import { closeRepo, openRepo } from "../source/open-repo.js";
import { loadSnapshot } from "../source/snapshot.js";
import { readState } from "../state/read-state.js";

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
  return resolvedWith(flags, await loadManifest(path.resolve(config), load), { root, load, under });
}

async function resolvedWith(
  flags: CommonFlags,
  loaded: LoadedManifest,
  r: Pick<Resolved, "root" | "load" | "under">,
): Promise<Resolved> {
  const { manifest } = loaded;
  const repoDir = flags.repo ? path.resolve(flags.repo) : r.under(manifest.repo.path);
  return {
    ...r,
    loaded,
    repoDir,
    stateDir: flags.stateDir ? path.resolve(flags.stateDir) : r.under(manifest.stateDir),
    manifestPath: await insideRepo(repoDir, loaded.file),
  };
}

/**
 * What a deploying process (serve, run) starts with. A manifest inside the clone is read from git at the
 * revision the host last ran, not from the work tree: the pipeline resets the work tree after its steps, and
 * when that failed (or someone edited the file there) the work tree is not what was deployed. Before a first
 * run, or when that revision is not in the clone, the file is what there is. `note` says when git's differs.
 * A file with the digest the last run recorded is that revision's: the usual start reads no git object.
 */
export async function resolveDeployed(flags: CommonFlags): Promise<Resolved & { note?: string }> {
  const r = await resolve(flags);
  if (!r.manifestPath) return r;
  const last = (await readState(r.stateDir, r.loaded.manifest.host)).state.lastRun;
  if (!last) return r;
  // The file as the last run left it (its digest recorded then): nothing to ask git, no process at start.
  // The text the loader parsed, not a second read, which could find another file than the one in use.
  const onDisk = r.loaded.text;
  if (last.manifestSha256 === manifestSha256(r.manifestPath, onDisk)) return r;
  const { revision } = last;
  const rev = revision.slice(0, 12);
  const text = await blobAt(r, r.manifestPath, revision).catch((err: unknown) => asAgentError(err));
  // A clone git cannot read fails the run that needs it, which says so: the process starts to report it.
  if (text instanceof AgentError)
    return {
      ...r,
      note: `${r.manifestPath} at ${rev} could not be read (${text.code}: ${text.message}): started with ${r.loaded.file}`,
    };
  if (text === null || text === onDisk) return r;
  const loaded = await parseManifest(text, `${r.manifestPath}@${rev}`, r.load);
  return {
    ...(await resolvedWith(flags, { ...loaded, file: r.loaded.file }, r)),
    note: `${r.loaded.file} is not ${r.manifestPath} as deployed at ${rev}: started with git's (the clone's work tree was not reset, or was edited; git -C ${r.repoDir} reset --hard ${rev} makes them one again)`,
  };
}

/** The manifest's text at `revision`, or null when that revision is not in the clone or has no such file. */
async function blobAt(r: Resolved, manifestPath: string, revision: string): Promise<string | null> {
  const { remote, branch } = r.loaded.manifest.repo;
  const repo = await openRepo(r.repoDir, remote, branch);
  try {
    const snapshot = loadSnapshot(repo, revision);
    if (!(await snapshot.has(manifestPath).catch(() => false))) return null;
    return (await snapshot.read(manifestPath)).toString("utf8");
  } finally {
    closeRepo(repo);
  }
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
