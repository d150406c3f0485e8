import { AgentError } from "../core/errors.js";
import { type ObjectReader, parseTree, type TreeEntry } from "./objects.js";
import type { Repo } from "./open-repo.js";

/**
 * The repository's content at one revision, read from git objects rather than the work tree. Dry runs read
 * the fetched revision without touching the work tree, and a symlink can never redirect a read: git records
 * it as a blob of mode 120000, which `read` refuses. Paths are resolved tree by tree on demand, so what a
 * push costs follows what it changed and what the steps read, not the size of the repository.
 */
export interface Snapshot {
  revision: string;
  /** Every file path at this revision (walks the whole tree: only for first runs, --all and checks). */
  paths(): Promise<string[]>;
  has(path: string): Promise<boolean>;
  read(path: string): Promise<Buffer>;
}

const REGULAR_FILE_MODES = new Set(["100644", "100755"]);
type Tree = Map<string, TreeEntry>;

/**
 * Trees by oid and the root tree of each revision, read through the object reader once each. One per run:
 * the diff and the snapshot walk the same trees of the deployed revision.
 */
export interface GitTrees {
  tree(oid: string): Promise<Tree>;
  /** The root tree of a commit, or null when `revision` names no commit here. */
  root(revision: string): Promise<string | null>;
}

export function gitTrees(objects: ObjectReader): GitTrees {
  const trees = new Map<string, Promise<Tree>>();
  const roots = new Map<string, Promise<string | null>>();
  return {
    tree(oid) {
      let tree = trees.get(oid);
      if (!tree) {
        tree = objects.read(oid).then((o) => {
          if (o?.type !== "tree") throw new AgentError("GIT_FAILED", `tree ${oid} is missing from the clone`);
          return parseTree(o.data, oid.length / 2);
        });
        trees.set(oid, tree);
      }
      return tree;
    },
    root(revision) {
      let root = roots.get(revision);
      if (!root) {
        root = objects
          .read(`${revision}^{commit}`)
          .then((o) =>
            o?.type === "commit"
              ? (/^tree ([0-9a-f]{40,64})\n/.exec(o.data.toString("latin1"))?.[1] ?? null)
              : null,
          );
        roots.set(revision, root);
      }
      return root;
    },
  };
}

async function listAll(tree: (oid: string) => Promise<Tree>, oid: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const [name, e] of await tree(oid)) {
    if (e.type === "tree") out.push(...(await listAll(tree, e.oid, `${prefix}${name}/`)));
    else out.push(`${prefix}${name}`);
  }
  return out;
}

export function loadSnapshot(
  repo: Pick<Repo, "dir" | "objects">,
  revision: string,
  trees = gitTrees(repo.objects),
): Snapshot {
  const short = revision.slice(0, 12);
  const { tree } = trees;
  const rootOid = async () => {
    const oid = await trees.root(revision);
    if (!oid) throw new AgentError("REPO_INVALID", `${revision} is not a commit in ${repo.dir}`);
    return oid;
  };
  let all: Promise<string[]> | undefined;
  /** The entry at `path`, walking one tree per directory level; null when there is none. */
  const entry = async (path: string): Promise<TreeEntry | null> => {
    let oid = await rootOid();
    const parts = path.split("/");
    for (const [i, name] of parts.entries()) {
      const e = (await tree(oid)).get(name);
      if (!e) return null;
      if (i === parts.length - 1) return e;
      if (e.type !== "tree") return null;
      oid = e.oid;
    }
    return null;
  };
  return {
    revision,
    paths: () => {
      all ??= rootOid().then((oid) => listAll(tree, oid, ""));
      return all;
    },
    has: async (path) => {
      const e = await entry(path);
      return e !== null && e.type !== "tree";
    },
    async read(path) {
      const e = await entry(path);
      if (!e || e.type === "tree") {
        throw new AgentError("SOURCE_MISSING", `${path} does not exist at ${short}`);
      }
      if (e.mode === "120000") {
        throw new AgentError("SOURCE_UNSAFE", `${path} is a symlink at ${short}; refusing to deploy it`, {
          hint: "commit the file itself, not a link to it",
        });
      }
      if (!REGULAR_FILE_MODES.has(e.mode)) {
        throw new AgentError("SOURCE_UNSAFE", `${path} is not a regular file at ${short} (mode ${e.mode})`);
      }
      const blob = await repo.objects.read(e.oid);
      if (!blob) throw new AgentError("GIT_FAILED", `blob ${e.oid} (${path}) is missing from the clone`);
      return blob.data;
    },
  };
}

/**
 * Paths that differ between two commits (added, modified, deleted; a rename is both of its paths), from
 * their trees: subtrees with equal oids are skipped, so the cost follows the change, not the repository.
 * Null when `from` is not a commit of this repository (history rewritten, or state from elsewhere).
 */
export async function changedPaths(trees: GitTrees, from: string, to: string): Promise<string[] | null> {
  if (!/^[0-9a-f]{40,64}$/.test(from)) return null;
  const [a, b] = await Promise.all([trees.root(from), trees.root(to)]);
  if (!a || !b) return null;
  const { tree } = trees;
  const changed: string[] = [];
  const walk = async (left: string | null, right: string | null, prefix: string): Promise<void> => {
    if (left === right) return;
    const [l, r] = await Promise.all([left ? tree(left) : new Map(), right ? tree(right) : new Map()]);
    for (const name of new Set([...l.keys(), ...r.keys()])) {
      const x: TreeEntry | undefined = l.get(name);
      const y: TreeEntry | undefined = r.get(name);
      if (x && y && x.oid === y.oid && x.mode === y.mode) continue;
      const path = `${prefix}${name}`;
      const xt = x?.type === "tree" ? x.oid : null;
      const yt = y?.type === "tree" ? y.oid : null;
      if (xt || yt) await walk(xt, yt, `${path}/`);
      if ((x && !xt) || (y && !yt)) changed.push(path);
    }
  };
  await walk(a, b, "");
  return changed.sort();
}
