import { execFileSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type Fixture, git } from "./git.js";

/** The host's allowed_signers file, as manifests name it under --root. */
export const ALLOWED_SIGNERS = "/etc/deploy-agent/allowed_signers";

/**
 * An SSH key (ssh-keygen) the host trusts for git (a line of its allowed_signers under `root`; a second
 * signer adds its own), a way to push commits signed with it from the fixture's pusher clone, and to revoke it.
 */
export function trustedSigner(fx: Fixture, root: string, name = "jared") {
  const key = path.join(fx.dir, `${name}.key`);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key]);
  const allowed = path.join(root, ALLOWED_SIGNERS);
  mkdirSync(path.dirname(allowed), { recursive: true });
  const line = `${name} namespaces="git" ${readFileSync(`${key}.pub`, "utf8")}`;
  appendFileSync(allowed, line);
  return {
    /** Writes the files in the pusher clone, commits them signed and pushes; the new commit. */
    push(files: Record<string, string>, message: string): string {
      for (const [rel, content] of Object.entries(files)) {
        mkdirSync(path.dirname(path.join(fx.pusher, rel)), { recursive: true });
        writeFileSync(path.join(fx.pusher, rel), content);
      }
      git(fx.pusher, "add", "-A");
      git(
        fx.pusher,
        "-c",
        "gpg.format=ssh",
        "-c",
        `user.signingkey=${key}`,
        "commit",
        "-q",
        "-S",
        "-m",
        message,
      );
      git(fx.pusher, "push", "--quiet", "origin", "main");
      return git(fx.pusher, "rev-parse", "HEAD");
    },
    /** Takes the key out of the host's allowed_signers: what it signed is no longer trusted. */
    revoke(): void {
      writeFileSync(allowed, readFileSync(allowed, "utf8").replace(line, ""));
    },
  };
}
