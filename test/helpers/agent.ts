import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { silentLogger } from "../../src/core/log.js";
import type { DeployOptions } from "../../src/deploy/deploy-options.js";
import { deploy } from "../../src/deploy/pipeline.js";
import type { RunReport } from "../../src/deploy/run-report.js";
import { loadManifest } from "../../src/manifest/load.js";

export const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(PROJECT, "src/bin.ts");
/** Node's argv for the CLI through tsx; `--` as in the bin's shebang, so Node leaves our flags alone. */
const cliArgv = (args: string[]) => ["--import", "tsx", "--", CLI, ...args];

/** Writes a manifest (host lxctest unless given) into dir and returns its path. */
export function writeManifest(
  dir: string,
  manifest: Record<string, unknown>,
  name = "manifest.yaml",
): string {
  const file = path.join(dir, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, stringify({ version: 1, host: "lxctest", listen: { port: 9000 }, ...manifest }));
  return file;
}

export interface Agent {
  root: string;
  stateDir: string;
  manifestFile: string;
  run(opts?: Partial<Omit<DeployOptions, "unpin">> & { envFile?: string }): Promise<RunReport>;
}

/** An agent whose host is `<dir>/root` and whose state lives in `<dir>/state`. */
export function makeAgent(dir: string, clone: string, manifestFile: string): Agent {
  const root = path.join(dir, "root");
  const stateDir = path.join(dir, "state");
  mkdirSync(root, { recursive: true });
  return {
    root,
    stateDir,
    manifestFile,
    async run(opts = {}) {
      const { manifest } = await loadManifest(manifestFile, { envFile: opts.envFile, processEnv: {} });
      return deploy({
        manifest,
        repoDir: clone,
        stateDir,
        root,
        dryRun: false,
        trigger: { kind: "manual", user: "test" },
        fetch: true,
        all: false,
        only: [],
        lockWaitMs: 0,
        log: silentLogger(),
        ...opts,
      });
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI in a child process (through tsx, so tests need no build). */
/** `onStderr` hears the standard error so far at every chunk (to act while the command runs). */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  opts: { onStderr?: (stderr: string) => void } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, cliArgv(args), {
      cwd: PROJECT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
      opts.onStderr?.(stderr);
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The step report of the named step. */
export function stepOf(report: RunReport, name: string) {
  const s = report.steps.find((x) => x.name === name);
  if (!s) throw new Error(`no step ${name} in report`);
  return s;
}

/**
 * A host root under `dir` as `serve` needs it: /var/www and the other directories given, and the webhook
 * secret in /etc/deploy-agent/webhook-secret (mode 0600). Returns the root.
 */
export function hostRoot(dir: string, secret: string, dirs: string[] = []): string {
  const root = path.join(dir, "root");
  for (const d of ["var/www", "etc/deploy-agent", ...dirs])
    mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), `${secret}\n`, { mode: 0o600 });
  return root;
}

/** `deploy-agent run` arguments for a test fixture: its manifest, clone, host root and state directory. */
export function runArgs(manifest: string, clone: string, root: string, stateDir: string): string[] {
  return ["run", "--config", manifest, "--repo", clone, "--root", root, "--state-dir", stateDir];
}

/** `deploy-agent serve` arguments for a test fixture: its manifest, clone and host root. */
export function serveArgs(manifest: string, clone: string, root: string, listen = "127.0.0.1:0"): string[] {
  return ["serve", "--config", manifest, "--repo", clone, "--root", root, "--listen", listen];
}

export interface Served {
  child: ChildProcess;
  /** Everything the process printed so far (stdout and stderr). */
  out(): string;
  exited: Promise<number | null>;
  /** Resolves with the first match of pattern in the output; rejects after ms. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
}

/** The environment systemd/deploy-agent@.service gives the daemon (NODE_OPTIONS, NODE_ENV), as systemd passes it. */
export function unitEnvironment(): Record<string, string> {
  const unit = readFileSync(path.join(PROJECT, "systemd/deploy-agent@.service"), "utf8");
  const env: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment="?([A-Z_]+)=([^"\n]*)"?$/gm)) env[m[1] ?? ""] = m[2] ?? "";
  return env;
}

/** The node flags the unit's ExecStart gives `serve` (`/usr/bin/env node FLAGS /usr/local/bin/deploy-agent`). */
export function unitNodeFlags(): string[] {
  const unit = readFileSync(path.join(PROJECT, "systemd/deploy-agent@.service"), "utf8");
  const exec = /^ExecStart=\/usr\/bin\/env node (.*?) ?\/usr\/local\/bin\/deploy-agent /m.exec(unit);
  return exec?.[1]?.split(" ").filter(Boolean) ?? [];
}

/** `deploy-agent <args>` as a long-running child process (serve), through tsx. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): Served {
  return served(cliArgv(args), env);
}

/** The executable as built (`node build.mjs`) and installed. */
export const BUILT_BIN = path.join(PROJECT, "dist/src/bin.js");

/** `deploy-agent <args>` of the built executable (or a copy of it) as a long-running child process. */
export function startBuilt(args: string[], env: NodeJS.ProcessEnv = {}, bin = BUILT_BIN): Served {
  return served([bin, ...args], env);
}

function served(argv: string[], env: NodeJS.ProcessEnv): Served {
  const child = spawn(process.execPath, argv, {
    cwd: PROJECT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    out: () => out,
    exited,
    async waitFor(pattern, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        const m = pattern.exec(out);
        if (m) return m[0];
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`timed out waiting for ${pattern}; output:\n${out}`);
    },
  };
}

/** A loopback port free at the time of asking (for a listener a test cannot give port 0). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((done) => srv.listen(0, "127.0.0.1", done));
  const { port } = srv.address() as AddressInfo;
  await new Promise((done) => srv.close(done));
  return port;
}

/** The base URL a `serve` process said it listens on. */
export async function listeningUrl(daemon: Served): Promise<string> {
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  const url = /"address":"(http:\/\/[^"]+)"/.exec(line)?.[1];
  if (!url) throw new Error(`no address in ${line}`);
  return url;
}
