import { existsSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { gitAt } from "../source/git-command.js";
import { argv, hostPath } from "../steps/common.js";
import type { HostJob, JobContext, JobResult } from "./types.js";

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

export interface NightlyResult extends JobResult {
  built: boolean;
  revision: string;
  release?: string;
}

const BUILD_LOG_TAIL = 3000;

export async function cinnyNightly(c: CinnyConfig, ctx: JobContext): Promise<NightlyResult> {
  const source = ctx.host.resolve(c.source);
  const releases = `${c.webRoot}.releases`;
  // Fetching only updates the clone's remote-tracking ref (also in a dry run, as the deploy pipeline does).
  if (!existsSync(source)) {
    throw new AgentError("SOURCE_MISSING", `Cinny's source clone ${c.source} does not exist`, {
      hint: `clone it once: git clone --branch ${c.branch} https://github.com/cinnyapp/cinny.git ${source}`,
    });
  }
  const git = gitAt(source, ctx.signal);
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
  const live = (await ctx.host.readlink(c.webRoot)) ?? "";
  if (path.basename(live).startsWith(`${short}-`) && !ctx.force) {
    return { built: false, revision: target, message: `${c.branch} unchanged at ${short}; nothing to build` };
  }
  await ctx.git(c.source, ["reset", "--quiet", "--hard", target]);
  await ctx.host.remove(path.posix.join(c.source, "dist"));
  let ran = true;
  for (const command of c.build) {
    const result = await ctx
      .run(command, { cwd: source, env: { NODE_OPTIONS: c.nodeOptions }, tail: BUILD_LOG_TAIL })
      .catch((err: AgentError) => {
        throw new AgentError(
          "BUILD_FAILED",
          `build of ${short} failed; the live site is untouched. ${err.message}`,
        );
      });
    ran &&= result.ran;
  }
  if (!ran) {
    // Only recorded (dry run): what the build produces is known only by building.
    return {
      built: false,
      revision: target,
      message: `would build ${c.branch} at ${short} and switch ${c.webRoot} to it`,
    };
  }
  const dist = path.posix.join(c.source, "dist");
  if (!(await ctx.host.read(path.posix.join(dist, "index.html")))) {
    throw new AgentError(
      "BUILD_FAILED",
      `build of ${short} produced no dist/index.html; the live site is untouched`,
    );
  }
  const release = path.posix.join(releases, `${short}-${Date.now()}`);
  try {
    await ctx.host.copyTree(dist, release);
    // The backup survives rebuilds; without one, keep the live config rather than the build's default.
    const config =
      (await ctx.host.read(c.configBackup)) ??
      (await ctx.host.read(path.posix.join(c.webRoot, "config.json")));
    if (config) await ctx.host.write(path.posix.join(release, "config.json"), config, { mode: 0o644 });
    else ctx.log.warn(`no ${c.configBackup} and no live config.json: the build's own config.json stays`);
  } catch (err) {
    // A release copied half-way (a full disk) is never kept: being the newest, it would outlive the
    // previous live release at the next pruning.
    await ctx.host.remove(release).catch(() => {});
    throw err;
  }

  await ctx.host.swapLink(c.webRoot, release, path.posix.join(releases, `previous-${Date.now()}`));
  // The releases beside the live one, newest first; the oldest beyond keepReleases go.
  const old = (await ctx.host.list(releases))
    .filter((r) => r.path !== release)
    .sort((a, b) => b.mtimeMs - a.mtimeMs)
    .slice(c.keepReleases - 1);
  for (const r of old) await ctx.host.remove(r.path);
  return {
    built: true,
    acted: true,
    revision: target,
    release: ctx.host.resolve(release),
    message: `deployed cinny ${c.branch} ${short} to ${c.webRoot}`,
  };
}

export const cinnyNightlyJob: HostJob<typeof cinnySchema> = {
  command: "cinny-nightly",
  section: "cinny",
  schema: cinnySchema,
  summary: "build Cinny's dev branch and switch the web root to it (--force: even if unchanged)",
  timeoutSeconds: 3600,
  install: { cron: { file: "cinny-dev-update.cron", as: "/etc/cron.d/cinny-dev-update" } },
  run: cinnyNightly,
};
