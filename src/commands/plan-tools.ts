import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
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
    timeoutMs: TOOL_TIMEOUT_MS,
  };
}

interface ToolRun {
  code: number | null;
  output: string;
  timedOut: boolean;
}

function runTool(file: string, args: string[], timeoutMs: number): Promise<ToolRun> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
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
    // The distribution's units for dependencies, the unit where the step installs it, and a stand-in for
    // every program it starts: what is checked is the unit file, not this machine's programs.
    if (await stat("/lib/systemd/system").catch(() => null))
      await cp("/lib/systemd/system", path.join(root, "lib/systemd/system"), { recursive: true });
    const dir = path.join(root, step.directory);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, unit), data);
    for (const m of data.toString("utf8").matchAll(/^Exec\w+=[-@:+!]*(\/\S+)/gm)) {
      const exe = path.join(root, m[1] ?? "");
      if (!exe.startsWith(root + path.sep)) continue;
      await mkdir(path.dirname(exe), { recursive: true });
      await writeFile(exe, "#!/bin/sh\n");
      await chmod(exe, 0o755);
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
  const main = targets.some((t) => path.posix.basename(t) === "nginx.conf");
  return scratch(async (dir) => {
    const own = path.join(dir, "under-test.conf");
    await writeFile(own, data);
    // A site or conf.d snippet is included where nginx includes them: inside http {}.
    const conf = main ? own : path.join(dir, "nginx.conf");
    if (!main)
      await writeFile(
        conf,
        `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  include ${own};\n}\n`,
      );
    const run = await runTool(
      tools.nginx ?? "",
      ["-t", "-q", "-p", `${dir}/`, "-c", conf, "-e", `${dir}/error.log`],
      tools.timeoutMs,
    );
    if (run.timedOut)
      return {
        name,
        file,
        result: "failed",
        message: `nginx -t did not finish within ${tools.timeoutMs} ms`,
      };
    const output = run.output.split(`${dir}/`).join("").split(dir).join("");
    if (run.code === 0) return { name, file, result: "passed", message: "nginx -t: syntax ok" };
    if (/No such file or directory/.test(output))
      return {
        name,
        file,
        result: "skipped",
        message: `needs files that only the host has: ${tail(output, 300)}`,
      };
    return { name, file, result: "failed", message: tail(output) };
  });
}
