import { randomBytes } from "node:crypto";
import {
  cp,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { simpleGit } from "simple-git";
import { z } from "zod";
import type { CommandRunner } from "../command.js";
import { AgentError } from "../errors.js";
import { argv, hostPath } from "../steps/common.js";

/**
 * The nightly build of Cinny's dev branch (replaces cinny/dev-update.sh). Builds in the source clone,
 * requires dist/index.html, copies the build into a new release directory beside the web root with
 * config.json restored from the backup, then points the web root (a symlink) at it with one rename:
 * visitors see the old site or the new one, never a half-copied one. A failed build touches nothing.
 */

export const cinnySchema = z.strictObject({
  source: hostPath.default("/opt/cinny-dev"),
  branch: z.string().min(1).default("dev"),
  remote: z.string().min(1).default("origin"),
  webRoot: hostPath.default("/var/www/html"),
  configBackup: hostPath.default("/opt/cinny-dev/.cinny-config.json"),
  build: z
    .array(argv)
    .min(1)
    .default([
      ["npm", "ci", "--no-audit", "--no-fund"],
      ["npm", "run", "build"],
    ]),
  nodeOptions: z.string().default("--max_old_space_size=896"),
  /** Release directories kept beside the web root (the live one included). */
  keepReleases: z.number().int().min(1).max(10).default(2),
});

export type CinnyConfig = z.infer<typeof cinnySchema>;

export interface NightlyResult {
  built: boolean;
  revision: string;
  release?: string;
  message: string;
}

const BUILD_LOG_TAIL = 3000;

export async function cinnyNightly(opts: {
  config: CinnyConfig;
  under: (p: string) => string;
  run: CommandRunner;
  force: boolean;
  dryRun: boolean;
  log: Logger;
}): Promise<NightlyResult> {
  const { config: c, under } = opts;
  const source = under(c.source);
  const webRoot = under(c.webRoot);
  const releases = `${webRoot}.releases`;
  const git = simpleGit({ baseDir: source });
  await git
    .fetch([c.remote, `+refs/heads/${c.branch}:refs/remotes/${c.remote}/${c.branch}`])
    .catch((err: Error) => {
      throw new AgentError(
        "FETCH_FAILED",
        `git fetch in ${c.source} failed: ${err.message.split("\n").at(-1)}`,
      );
    });
  const target = (await git.revparse([`refs/remotes/${c.remote}/${c.branch}`])).trim();
  const short = target.slice(0, 12);
  // Unchanged means the live web root is a release built from this very commit (named <rev>-<time>).
  const live = await readlink(webRoot).catch(() => "");
  if (path.basename(live).startsWith(`${short}-`) && !opts.force) {
    return { built: false, revision: target, message: `${c.branch} unchanged at ${short}; nothing to build` };
  }
  if (opts.dryRun) {
    return {
      built: false,
      revision: target,
      message: `would build ${c.branch} at ${short} (${c.build.map((b) => b.join(" ")).join("; ")}) and switch ${c.webRoot} to it`,
    };
  }
  await git.reset(["--hard", target]);
  await rm(path.join(source, "dist"), { recursive: true, force: true });
  for (const command of c.build) {
    await opts
      .run(command, { cwd: source, env: { NODE_OPTIONS: c.nodeOptions }, tail: BUILD_LOG_TAIL })
      .catch((err: AgentError) => {
        throw new AgentError(
          "BUILD_FAILED",
          `build of ${short} failed; the live site is untouched. ${err.message}`,
        );
      });
  }
  const dist = path.join(source, "dist");
  if (!(await stat(path.join(dist, "index.html")).catch(() => null))) {
    throw new AgentError(
      "BUILD_FAILED",
      `build of ${short} produced no dist/index.html; the live site is untouched`,
    );
  }

  await mkdir(releases, { recursive: true });
  const release = path.join(releases, `${short}-${Date.now()}`);
  await cp(dist, release, { recursive: true });
  // The backup survives rebuilds; without one, keep the live config rather than the build's default.
  const config =
    (await readFile(under(c.configBackup)).catch(() => null)) ??
    (await readFile(path.join(webRoot, "config.json")).catch(() => null));
  if (config) await writeFile(path.join(release, "config.json"), config);
  else opts.log.warn(`no ${c.configBackup} and no live config.json: the build's own config.json stays`);

  await switchTo(webRoot, release);
  await prune(releases, c.keepReleases, release);
  return {
    built: true,
    revision: target,
    release,
    message: `deployed cinny ${c.branch} ${short} to ${c.webRoot}`,
  };
}

/** Points webRoot (a symlink) at release with one atomic rename; a real directory there is moved aside first. */
async function switchTo(webRoot: string, release: string): Promise<void> {
  const st = await lstat(webRoot).catch(() => null);
  if (st?.isDirectory()) {
    // First run on a host where the web root is still a plain directory: keep it as a release.
    await rename(webRoot, path.join(`${webRoot}.releases`, `previous-${Date.now()}`));
  }
  const link = `${webRoot}.${randomBytes(6).toString("hex")}.tmp`;
  await symlink(release, link);
  await rename(link, webRoot);
}

async function prune(releases: string, keep: number, current: string): Promise<void> {
  const entries = (await readdir(releases)).map((e) => path.join(releases, e));
  const dated = await Promise.all(entries.map(async (e) => ({ e, t: (await stat(e)).mtimeMs })));
  const old = dated
    .filter((d) => d.e !== current)
    .sort((a, b) => b.t - a.t)
    .slice(keep - 1);
  for (const { e } of old) await rm(e, { recursive: true, force: true });
}
