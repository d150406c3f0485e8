import type { Logger } from "pino";
import { asAgentError, logFields } from "../core/errors.js";
import { revisionsToDiff } from "../plan/plan.js";
import { fetchBranch, headCommit, resolveTarget } from "../source/git.js";
import { clearStaleGitLocks } from "../source/git-locks.js";
import { openRepo, type Repo } from "../source/open-repo.js";
import { changedPaths, gitTrees, loadSnapshot, type Snapshot } from "../source/snapshot.js";
import { dirtyPaths, resetHard } from "../source/work-tree.js";
import type { State } from "../state/state.js";
import type { DeployOptions } from "./deploy-options.js";
import type { RunReport } from "./run-report.js";

/** The synced source: the revision to deploy, its content, and what changed since each applied revision. */
export interface Source {
  repo: Repo;
  revision: string;
  previousHead: string | null;
  snapshot: Snapshot;
  changes: Map<string, string[] | null>;
}

/**
 * Fetch (optional), resolve origin/<branch> and what changed, all from git objects: after the fetch a push
 * spawns no process until its steps are done. Steps read git objects, never the work tree, so the
 * work tree is reset after them (`syncWorkTree`), and only once the revision's manifest is known to be
 * valid: a clone reset to an invalid manifest would keep the agent from starting again.
 */
export interface Fetched {
  repo: Repo;
  /** The branch's tip, as fetched (or as the remote-tracking ref has it). */
  tip: string;
  previousHead: string | null;
}

export async function fetchSource(opts: DeployOptions, warnings: string[]): Promise<Fetched> {
  const { repo: cfg } = opts.manifest;
  const repo = opts.repo ?? (await openRepo(opts.repoDir, cfg.remote, cfg.branch));
  if (!opts.dryRun) {
    // Safe only under the deploy lock, which a real run holds here.
    const stale = clearStaleGitLocks(repo);
    if (stale.length)
      warnings.push(`removed git lock files left by a killed git process: ${stale.join(", ")}`);
  }
  const [fetched, previousHead] = await Promise.all([
    opts.fetch ? fetchBranch(repo) : null,
    headCommit(repo),
  ]);
  return { repo, tip: fetched ?? (await resolveTarget(repo)), previousHead };
}

/** The revision to deploy, its content, and what changed since each revision the steps applied. */
export async function sourceAt(fetched: Fetched, state: State, revision: string): Promise<Source> {
  const { repo, previousHead } = fetched;
  const froms = revisionsToDiff(state, revision);
  const trees = gitTrees(repo.objects);
  const diffs = await Promise.all(froms.map((from) => changedPaths(trees, from, revision)));
  const changes = new Map(froms.map((from, i) => [from, diffs[i] ?? null]));
  return { repo, revision, previousHead, snapshot: loadSnapshot(repo, revision, trees), changes };
}

/**
 * The clone's work tree to the deployed revision, local edits discarded (and said). Runs after the steps,
 * which read git objects only: when git cannot do it (a damaged index, a full disk), the steps have applied
 * the revision all the same, so the run is recorded as what it did and this is a warning that says how to
 * repair the clone, returned for the report (and its notice). Never throws.
 */
export async function syncWorkTree(
  source: Source,
  warnings: string[],
  log: Logger,
  stepFailed: boolean,
): Promise<RunReport["resetFailed"]> {
  try {
    const dirty = await dirtyPaths(source.repo);
    if (dirty.length || source.previousHead !== source.revision)
      await resetHard(source.repo, source.revision);
    // Said once they are gone: a reset that failed discarded nothing.
    if (dirty.length) warnings.push(`discarding local edits in the clone: ${dirty.join(", ")}`);
  } catch (err) {
    const e = asAgentError(err);
    const rev = source.revision.slice(0, 12);
    const dir = source.repo.dir;
    // A bug: its stack to the journal; git's own failures are said by the warning (logged with the run's).
    if (e.code === "INTERNAL") log.error(logFields(e), "the clone's work tree could not be reset");
    const repair = `git -C ${dir} reset --hard ${rev} (if git says its index is damaged, remove ${dir}/.git/index first)`;
    warnings.push(
      `the clone's work tree could not be reset to ${rev} (${e.code}: ${e.message}); ${stepFailed ? `the steps' results at ${rev} stand as reported` : `the steps applied ${rev}, which the host runs`}: repair the clone with ${repair}; until then its files are not the deployed revision's`,
    );
    return {
      code: e.code,
      message: `the clone's work tree could not be reset to ${rev}: ${e.message}`,
      hint: repair,
    };
  }
  return undefined;
}
