import { AgentError } from "../errors.js";
import { listTree, type Repo, readBlob, type TreeEntry } from "./git.js";

/**
 * The repository's content at one revision, read from git objects rather than the work tree. Dry runs read
 * the fetched revision without touching the work tree, and a symlink can never redirect a read: git records
 * it as a blob of mode 120000, which `read` refuses.
 */
export interface Snapshot {
  revision: string;
  /** Every file path at this revision. */
  paths(): string[];
  has(path: string): boolean;
  read(path: string): Promise<Buffer>;
}

const REGULAR_FILE_MODES = new Set(["100644", "100755"]);

export async function loadSnapshot(repo: Repo, revision: string): Promise<Snapshot> {
  const tree = await listTree(repo, revision);
  return snapshotFrom(revision, tree, (entry) => readBlob(repo, entry.oid));
}

export function snapshotFrom(
  revision: string,
  tree: Map<string, TreeEntry>,
  readEntry: (entry: TreeEntry) => Promise<Buffer>,
): Snapshot {
  const short = revision.slice(0, 12);
  return {
    revision,
    paths: () => [...tree.keys()],
    has: (path) => tree.has(path),
    async read(path) {
      const entry = tree.get(path);
      if (!entry) {
        throw new AgentError("SOURCE_MISSING", `${path} does not exist at ${short}`);
      }
      if (entry.mode === "120000") {
        throw new AgentError("SOURCE_UNSAFE", `${path} is a symlink at ${short}; refusing to deploy it`, {
          hint: "commit the file itself, not a link to it",
        });
      }
      if (!REGULAR_FILE_MODES.has(entry.mode)) {
        throw new AgentError(
          "SOURCE_UNSAFE",
          `${path} is not a regular file at ${short} (mode ${entry.mode})`,
        );
      }
      return readEntry(entry);
    },
  };
}
