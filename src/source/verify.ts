import { fileURLToPath } from "node:url";
import { AgentError } from "../core/errors.js";
import type { Manifest } from "../manifest/schema.js";
import { type Descent, descent } from "./ancestry.js";
import { gitExit } from "./git-command.js";
import type { Repo } from "./open-repo.js";

/**
 * Commit signatures, checked by git itself (`git verify-commit`): SSH signatures against the allowed-signers
 * file, OpenPGP signatures against the keys in a GnuPG home. An unverified revision deploys nothing, and
 * with verification on neither does a revision that does not descend from the last one the host ran: a
 * force push back to an older signed commit would otherwise undo a later fix, or a manifest's `verify`.
 */

export type VerifyConfig = Manifest["repo"]["verify"];

/**
 * git's SSH program for verification: ssh-keygen without the commit's own date as the verification time
 * (libexec/ssh-keygen-now says why), so keys' valid-after and valid-before count at the time of the check.
 * OpenPGP needs nothing: gpg judges a key's expiry and creation at the current time itself.
 */
const SSH_KEYGEN_NOW = fileURLToPath(new URL("../../libexec/ssh-keygen-now", import.meta.url));

/** One verify-commit may take this long (without output) before git is killed and the commit counts as unverified. */
const VERIFY_TIMEOUT_MS = 30_000;

/** The commits a deploy of `to` must verify: the tip, or (mode all) every commit since the last deployed one. */
async function commitsToVerify(
  repo: Repo,
  mode: "tip" | "all",
  from: string | null,
  to: string,
): Promise<string[]> {
  if (mode === "tip" || !from || from === to) return [to];
  // The revision itself always: going back (a pin, an accepted rewrite) leaves `from..to` empty.
  const known = await repo.git.raw(["cat-file", "-t", from]).then(
    (t) => t.trim() === "commit",
    () => false,
  );
  // A last revision the repository no longer has: the history cannot be split, all of it counts.
  const range = known ? [`${from}..${to}`] : [to];
  const listed = (await repo.git.raw(["rev-list", ...range])).split("\n").filter(Boolean);
  return listed.includes(to) ? listed : [to, ...listed];
}

export interface RevisionCheck {
  /** Where this host stands: the newest revision verified here (state.anchor), null on a first run. */
  from: string | null;
  to: string;
  /** The operator takes a rewritten branch on purpose (`run --accept-rewrite`); its commits are still verified. */
  acceptRewrite?: boolean | undefined;
}

/** Verifies `to` before anything of it is used; returns how it relates to `from` (the caller warns on a rewrite). */
export async function verifyRevision(
  repo: Repo,
  config: VerifyConfig,
  under: (p: string) => string,
  { from, to, acceptRewrite = false }: RevisionCheck,
): Promise<Descent> {
  const moved = await descent(repo, from, to);
  if (config.mode === "off") return moved;
  if (moved === "rewritten" && !acceptRewrite) {
    const [was, now] = [from?.slice(0, 12), to.slice(0, 12)];
    throw new AgentError(
      "HISTORY_REWRITTEN",
      `${repo.remote}/${repo.branch} is at ${now}, which does not descend from ${was}, the newest revision verified on this host: the branch's history was rewritten (a force push to an older commit or onto another line); nothing was deployed`,
      {
        hint: `the host stays on ${was}. Push a commit on top of ${was} instead (git revert keeps history); to go back to an earlier revision on purpose: deploy-agent pin <revision> on the host; to take the rewritten branch itself: deploy-agent run --accept-rewrite`,
      },
    );
  }
  const settings = [
    ...(config.allowedSignersFile
      ? [
          "-c",
          `gpg.ssh.allowedSignersFile=${under(config.allowedSignersFile)}`,
          "-c",
          `gpg.ssh.program=${SSH_KEYGEN_NOW}`,
        ]
      : []),
    ...(config.revokedKeysFile ? ["-c", `gpg.ssh.revocationFile=${under(config.revokedKeysFile)}`] : []),
  ];
  // The minimal environment plus the manifest's GnuPG home: never the daemon's own GNUPGHOME or GIT_* settings.
  const env: Record<string, string> = config.gpgHome ? { GNUPGHOME: under(config.gpgHome) } : {};
  for (const commit of await commitsToVerify(repo, config.mode, from, to)) {
    const res = await gitExit(repo.dir, [...settings, "verify-commit", commit], {
      env,
      timeoutMs: VERIFY_TIMEOUT_MS,
      // gpg.ssh.program is ours (libexec/ssh-keygen-now), not the repository's.
      unsafe: { allowUnsafeGpgProgram: true },
    });
    if (res.exitCode === 0) continue;
    const said = String(res.stderr)
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
    const why =
      said.find((l) =>
        /expired|not yet valid|no signature|not|bad|revoked|could not|unknown|fail|error/i.test(l),
      ) ?? said.at(-1);
    throw new AgentError(
      "UNVERIFIED",
      `commit ${commit.slice(0, 12)}${commit === to ? "" : ` (under ${to.slice(0, 12)})`} is not signed by a trusted key: ${why ?? `git verify-commit exited ${res.exitCode}`}`,
      { hint: "nothing was deployed; the host stays on its last good revision until a verified push" },
    );
  }
  return moved;
}
