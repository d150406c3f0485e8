import { execFile } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { chmod, chown, cp, lstat, mkdir, mkdtemp, open, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  type ConfinedNginx,
  confineNginxPaths,
  type NginxDirective,
  nginxDirectives,
} from "../content/nginx-conf.js";
import type { Manifest } from "../manifest/schema.js";
import type { Snapshot } from "../source/snapshot.js";

/**
 * The checks a plan hands to the tools that own the formats: `systemd-analyze verify` for units and
 * `nginx -t` for nginx configuration, each on a copy in a scratch directory (never a host path), with a
 * timeout. A tool this machine lacks makes its check "skipped", said as such.
 */

/** One check of a host's plan: a tool's verdict here, the step kinds' own checks in plan-host. */
export interface PlanCheck {
  name: string;
  /** The repository file it is about. */
  file: string;
  result: "passed" | "failed" | "skipped";
  message: string;
}

export interface HostTools {
  systemdAnalyze: string | null;
  nginx: string | null;
  /** The distribution's units, copied into the scratch root for a unit's dependencies. */
  unitsDir: string;
  /** Longest one tool run may take before it is killed and its check fails. */
  timeoutMs: number;
}

export const TOOL_TIMEOUT_MS = 30_000;

/** An executable of that name on PATH, or null. */
export function findTool(name: string, envPath = process.env.PATH ?? ""): string | null {
  for (const dir of envPath.split(":").filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

export function hostTools(): HostTools {
  return {
    systemdAnalyze: findTool("systemd-analyze"),
    nginx: findTool("nginx"),
    unitsDir: "/lib/systemd/system",
    timeoutMs: TOOL_TIMEOUT_MS,
  };
}

/** The kernel's "nobody" (overflowuid/gid), as whom root runs nginx; null when not root. */
function unprivileged(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const read = (name: string) => {
    try {
      return Number.parseInt(readFileSync(`/proc/sys/kernel/${name}`, "utf8"), 10) || 65534;
    } catch {
      return 65534;
    }
  };
  return { uid: read("overflowuid"), gid: read("overflowgid") };
}

interface ToolRun {
  code: number | null;
  output: string;
  timedOut: boolean;
}

function runTool(
  file: string,
  args: string[],
  timeoutMs: number,
  as?: { uid: number; gid: number } | null,
  cwd?: string,
): Promise<ToolRun> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        // libuv drops the supplementary groups with the uid.
        ...(as ?? {}),
        cwd,
        timeout: timeoutMs,
        killSignal: "SIGKILL",
        maxBuffer: 1024 * 1024,
        env: { PATH: process.env.PATH ?? "", LC_ALL: "C" },
      },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
        resolve({
          code: e ? (typeof e.code === "number" ? e.code : null) : 0,
          output: `${stderr}${stdout}`.trim(),
          timedOut: !!e?.killed,
        });
      },
    );
  });
}

const tail = (text: string, max = 600) => (text.length > max ? `…${text.slice(-max)}` : text);

export async function toolChecks(manifest: Manifest, head: Snapshot, tools: HostTools): Promise<PlanCheck[]> {
  const checks: PlanCheck[] = [];
  for (const step of manifest.steps) {
    if (step.kind === "systemd-unit") checks.push(await verifyUnit(step, head, tools));
    if (step.kind === "file" && step.targets.some((t) => t.startsWith("/etc/nginx/")))
      checks.push(await nginxTest(step.name, step.source, step.targets, head, tools));
  }
  return checks;
}

async function scratch<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), "deploy-agent-plan-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Writes a file under the scratch root and never through a link: each directory on the way is made or must
 * be a real one, and whatever is at the name (the distribution's copied aliases and masked units are links)
 * is removed first. The name and the path come from the repository.
 */
async function writeInside(
  root: string,
  file: string,
  data: Buffer | string,
  mode: number,
  owner?: { uid: number; gid: number },
): Promise<void> {
  const parts = path.relative(root, file).split(path.sep);
  if (parts[0] === ".." || path.isAbsolute(parts[0] ?? ""))
    throw new Error(`${file} is outside the scratch root`);
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    dir = path.join(dir, part);
    const st = await lstat(dir).catch(() => null);
    if (!st) await mkdir(dir);
    else if (!st.isDirectory())
      throw new Error(`/${path.relative(root, dir)} is a link or a file, not a directory`);
  }
  await rm(file, { force: true });
  const handle = await open(file, "wx", mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode);
    if (owner) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}

async function verifyUnit(
  step: Extract<Manifest["steps"][number], { kind: "systemd-unit" }>,
  head: Snapshot,
  tools: HostTools,
): Promise<PlanCheck> {
  const name = `${step.name}: systemd-analyze verify`;
  const file = step.source;
  if (!tools.systemdAnalyze)
    return {
      name,
      file,
      result: "skipped",
      message: "systemd-analyze is not on this machine: the unit was not verified",
    };
  const data = await head.read(file).catch(() => null);
  if (!data)
    return { name, file, result: "skipped", message: "the unit file is missing (see the source check)" };
  const unit = step.unit ?? path.posix.basename(file);
  return scratch(async (root) => {
    // The distribution's units for dependencies (their links kept as links: fs.cp would make a relative
    // one absolute, into the host's directory), the unit where the step installs it, and a stand-in for
    // every program it starts: what is checked is the unit file, not this machine's programs.
    try {
      if (await stat(tools.unitsDir).catch(() => null))
        await cp(tools.unitsDir, path.join(root, "lib/systemd/system"), {
          recursive: true,
          verbatimSymlinks: true,
        });
      await writeInside(root, path.join(root, step.directory, unit), data, 0o644);
      for (const m of data.toString("utf8").matchAll(/^Exec\w+=[-@:+!]*(\/\S+)/gm)) {
        const exe = path.join(root, m[1] ?? "");
        if (exe.startsWith(root + path.sep)) await writeInside(root, exe, "#!/bin/sh\n", 0o755);
      }
    } catch (err) {
      const why = (err as Error).message.split(root).join("");
      return { name, file, result: "failed", message: `the unit could not be put in a scratch root: ${why}` };
    }
    const instance = unit.includes("@.") ? unit.replace("@.", "@plan.") : unit;
    const run = await runTool(
      tools.systemdAnalyze ?? "",
      ["verify", `--root=${root}`, instance],
      tools.timeoutMs,
    );
    if (run.timedOut)
      return {
        name,
        file,
        result: "failed",
        message: `systemd-analyze did not finish within ${tools.timeoutMs} ms`,
      };
    const output = run.output.split(root).join("");
    if (run.code !== 0 || output)
      return { name, file, result: "failed", message: tail(output || `exited with code ${run.code}`) };
    return { name, file, result: "passed", message: "systemd-analyze verify: no errors or warnings" };
  });
}

/** nginx's temporary directories, each compiled in under /var/lib/nginx: here in the scratch directory. */
const TEMP_PATHS = [
  "client_body_temp_path",
  "proxy_temp_path",
  "fastcgi_temp_path",
  "uwsgi_temp_path",
  "scgi_temp_path",
];

/** A snippet naming more paths for nginx -t to make is not run: each is a file or directory made here. */
const MAX_MADE_PATHS = 256;

/** nginx failing to open a file the configuration names (`open()`, or OpenSSL's for a certificate). */
const OPEN_FAILED =
  /^nginx: \[emerg\] (?:open\(\) "[^"]*" failed \((?:2: No such file or directory|13: Permission denied)\)|cannot load certificate(?: key)? "[^"]*": BIO_new_file\(\) failed)/;

/**
 * Why a snippet is not run here, or null: an include would read a file of this machine into nginx's
 * messages, and an OpenSSL engine or store named as a certificate or key (`engine:/path/x.so:id`) loads
 * code when `nginx -t` reads it.
 */
function refusal(directives: NginxDirective[]): string | null {
  const includes = directives.filter((d) => d.name === "include");
  if (includes.length)
    return `it includes ${includes.map((d) => JSON.stringify(d.args.join(" "))).join(", ")}, which only the host has`;
  const loader = directives.find((d) => d.args.some((a) => /^(?:engine|store):/i.test(a)));
  if (loader) return `its ${loader.name} names an OpenSSL engine or store, which loads code`;
  return null;
}

/** Paths a confined snippet has nginx -t make in the scratch directory. */
const madeOf = (c: ConfinedNginx) => c.files.length + c.dirs.length + c.sockets.length;

/** Why a configuration is not run here, or null. */
function whyNotRun(targets: readonly string[], data: Buffer, confined: ConfinedNginx | null): string | null {
  if (targets.some((t) => path.posix.basename(t) === "nginx.conf"))
    return "a main nginx.conf is not run here (it loads modules and names the host's files)";
  const refused = refusal(nginxDirectives(data.toString("utf8")));
  if (refused) return refused;
  if (!confined)
    return "its log, temp, cache or socket paths could not all be moved into a scratch directory";
  const made = madeOf(confined);
  if (made > MAX_MADE_PATHS)
    return `it names ${made} log, temp, cache or socket paths, more than the ${MAX_MADE_PATHS} made here`;
  return null;
}

async function nginxTest(
  stepName: string,
  file: string,
  targets: readonly string[],
  head: Snapshot,
  tools: HostTools,
): Promise<PlanCheck> {
  const name = `${stepName}: nginx -t`;
  if (!tools.nginx)
    return {
      name,
      file,
      result: "skipped",
      message: "nginx is not on this machine: the configuration was not tested",
    };
  const data = await head.read(file).catch(() => null);
  if (!data) return { name, file, result: "skipped", message: "the file is missing (see the source check)" };
  // latin1: one character a byte, so the snippet's bytes are written back as they were.
  const confined = confineNginxPaths(data.toString("latin1"));
  const refused = whyNotRun(targets, data, confined);
  if (refused || !confined)
    return {
      name,
      file,
      result: "skipped",
      message: `${refused}: the host's nginx -t checks it before the reload`,
    };
  const as = unprivileged();
  return scratch(async (dir) => {
    const own = path.join(dir, "under-test.conf");
    const conf = path.join(dir, "nginx.conf");
    // A site or conf.d snippet is included where nginx includes them: inside http {}. The directory and
    // the configuration stay this process's; the unprivileged user owns only the files nginx opens to
    // write (made here, owned through their descriptors), so it can rename nothing in the directory.
    await chmod(dir, 0o755);
    await mkdir(path.join(dir, "tmp"));
    await writeInside(dir, own, Buffer.from(confined.text, "latin1"), 0o644);
    await writeInside(
      dir,
      conf,
      `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log ${dir}/access.log;\n${TEMP_PATHS.map((d) => `  ${d} ${dir}/tmp;\n`).join("")}  include ${own};\n}\n`,
      0o644,
    );
    // The snippet's own log files, temp and cache directories and unix sockets, each given a name here
    // (confineNginxPaths): wherever it named them, nginx -t makes them in this directory only. Its sockets
    // are relative to nginx's working directory, this one.
    for (const f of ["nginx.pid", "error.log", "access.log", ...confined.files])
      await writeInside(dir, path.join(dir, f), "", 0o644, as ?? undefined);
    for (const d of confined.dirs) await mkdir(path.join(dir, d), { recursive: true });
    if (confined.sockets.length) {
      await mkdir(path.join(dir, "sockets"), { mode: 0o755 });
      if (as) await chown(path.join(dir, "sockets"), as.uid, as.gid);
    }
    const run = await runTool(
      tools.nginx ?? "",
      ["-t", "-q", "-p", `${dir}/`, "-c", conf, "-e", `${dir}/error.log`],
      tools.timeoutMs,
      as,
      dir,
    );
    if (run.timedOut)
      return {
        name,
        file,
        result: "failed",
        message: `nginx -t did not finish within ${tools.timeoutMs} ms`,
      };
    const output = run.output.split(`${dir}/`).join("").split(dir).join("");
    if (run.code === 0) {
      const more = madeOf(confined) ? "; its log, temp, cache and socket paths are the host's to check" : "";
      return { name, file, result: "passed", message: `nginx -t: syntax ok${more}` };
    }
    // A certificate or log path of the host: missing here, or not to be opened by the unprivileged user.
    // Read from nginx's first line only, its own words: later lines may quote the configuration's.
    if (OPEN_FAILED.test(output.split("\n")[0] ?? ""))
      return {
        name,
        file,
        result: "skipped",
        message: `needs files that only the host has: ${tail(output, 300)}`,
      };
    return { name, file, result: "failed", message: tail(output) };
  });
}
