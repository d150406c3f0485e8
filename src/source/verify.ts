import { AgentError } from "../errors.js";
import type { Manifest } from "../manifest/schema.js";
import type { Repo } from "./git.js";

/**
 * Commit signatures, checked by git itself (`git verify-commit`): SSH signatures against the allowed-signers
 * file, OpenPGP signatures against the keys in a GnuPG home. An unverified revision deploys nothing.
 */

export type VerifyConfig = Manifest["repo"]["verify"];

/** The commits a deploy of `to` must verify: the tip, or (mode all) every commit since the last deployed one. */
async function commitsToVerify(
  repo: Repo,
  mode: "tip" | "all",
  from: string | null,
  to: string,
): Promise<string[]> {
  if (mode === "tip" || !from || from === to) return [to];
  const known = await repo.git.raw(["cat-file", "-t", from]).then(
    (t) => t.trim() === "commit",
    () => false,
  );
  // A last revision the repository no longer has (force push): the history cannot be split, all of it counts.
  const range = known ? [`${from}..${to}`] : [to];
  const listed = await repo.git.raw(["rev-list", ...range]);
  return listed.split("\n").filter(Boolean);
}

export async function verifyRevision(
  repo: Repo,
  config: VerifyConfig,
  under: (p: string) => string,
  from: string | null,
  to: string,
): Promise<void> {
  if (config.mode === "off") return;
  const { execa } = await import("execa");
  const settings = [
    ...(config.allowedSignersFile
      ? ["-c", `gpg.ssh.allowedSignersFile=${under(config.allowedSignersFile)}`]
      : []),
    ...(config.revokedKeysFile ? ["-c", `gpg.ssh.revocationFile=${under(config.revokedKeysFile)}`] : []),
  ];
  const env = config.gpgHome ? { GNUPGHOME: under(config.gpgHome) } : {};
  for (const commit of await commitsToVerify(repo, config.mode, from, to)) {
    const res = await execa("git", ["-C", repo.dir, ...settings, "verify-commit", commit], {
      reject: false,
      env: { ...env, LC_ALL: "C" },
      timeout: 30_000,
    });
    if (res.exitCode === 0) continue;
    const said = String(res.stderr)
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
    const why =
      said.find((l) => /no signature|not|bad|revoked|could not|unknown|fail|error/i.test(l)) ?? said.at(-1);
    throw new AgentError(
      "UNVERIFIED",
      `commit ${commit.slice(0, 12)}${commit === to ? "" : ` (under ${to.slice(0, 12)})`} is not signed by a trusted key: ${why ?? `git verify-commit exited ${res.exitCode}`}`,
      { hint: "nothing was deployed; the host stays on its last good revision until a verified push" },
    );
  }
}
