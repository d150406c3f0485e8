import type { Manifest } from "../manifest/schema.js";

/**
 * With repo.verify off (the default) whoever can push to the config repository runs commands as root on
 * every host: install and validate say so in one line, every time.
 */
export function verifyOffNotice(manifest: Manifest): string | undefined {
  if (manifest.repo.verify.mode !== "off") return undefined;
  return "repo.verify is off: push access to the config repository is root on every host; set repo.verify mode: all (README: Deploy only signed commits)";
}
