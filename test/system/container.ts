import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, rmSync, symlinkSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A Debian bookworm container booted with a real systemd (systemd-nspawn), the way an LXC container runs the
 * agent. It shares the host's network: a daemon listening inside is reached on the host's loopback, and
 * npm inside reaches the registry. Node is the host's, bound read-only; so is the CA bundle the registry
 * proxy needs. Facts behind each choice: ../shared/systemd-in-ci.md.
 */

/** Where runs keep their containers: each run in a directory of its own below it (not /tmp: a tmpfs may be small). */
const WORK = "/var/tmp/deploy-agent-systest";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

export interface ShResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Container {
  name: string;
  /** The container's root directory on the host (not its tmpfs mounts: /tmp, /run). */
  dir: string;
  /** Host path of a file inside the container. */
  file(p: string): string;
  /** Runs a shell script inside, as root with a login-like environment; rejects unless it exits 0 (check). */
  sh(script: string, opts?: { check?: boolean; timeoutMs?: number }): Promise<ShResult>;
  /** `systemctl show` properties of a unit. */
  show(unit: string, ...props: string[]): Promise<Record<string, string>>;
  /** Polls until the unit's properties satisfy ok, or fails with them after ms. */
  waitUnit(
    unit: string,
    ok: (p: Record<string, string>) => boolean,
    ms?: number,
    ...props: string[]
  ): Promise<Record<string, string>>;
  journal(args?: string): Promise<string>;
  /** Powers the container off and removes it. */
  destroy(): Promise<void>;
}

/**
 * One run of the suite: its own directory for container roots and console logs, and an id in every machine
 * name, so two runs on one machine share no container, name or path. `remove` deletes it all.
 */
export interface Run {
  id: string;
  dir: string;
  remove(): void;
}

export function startRun(): Run {
  mkdirSync(WORK, { recursive: true });
  const id = randomBytes(4).toString("hex");
  const dir = path.join(WORK, `run-${id}`);
  mkdirSync(dir); // not recursive: an existing directory (an id drawn twice) throws instead of being shared
  return {
    id,
    dir,
    remove() {
      if (process.env.SYSTEST_KEEP && !process.env.CI) return; // local debugging: the containers stay up
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

/**
 * Unpacks the root filesystem tarball and boots it as `role` of the run (machine name da-<run id>-<role>).
 * `binds` are host paths shared read-write at the same path.
 */
export async function boot(run: Run, role: string, tarball: string, binds: string[]): Promise<Container> {
  const name = `da-${run.id}-${role}`;
  const dir = path.join(run.dir, role);
  mkdirSync(dir);
  execFileSync("tar", ["-C", dir, "-xf", tarball]);
  // The container shares the host's network: nothing in the image may listen on a fixed port at boot, or two
  // runs' containers collide (nginx's default site takes :80). A test that needs nginx adds its own site.
  rmSync(path.join(dir, "etc/nginx/sites-enabled/default"), { force: true });
  // npm and npx as the host has them (/usr/lib/node_modules is bound read-only below).
  for (const tool of ["npm", "npx"])
    symlinkSync(`../lib/node_modules/npm/bin/${tool}-cli.js`, path.join(dir, `usr/bin/${tool}`));
  for (const p of ["usr/bin/node", "usr/lib/node_modules"])
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
  execFileSync("touch", [path.join(dir, "usr/bin/node")]);
  mkdirSync(path.join(dir, "usr/lib/node_modules"), { recursive: true });
  const npmCache = path.join(homedir(), ".npm");
  mkdirSync(npmCache, { recursive: true });
  for (const b of binds) mkdirSync(path.join(dir, b), { recursive: true });
  mkdirSync(path.join(dir, "root/.npm"), { recursive: true });

  const log = openSync(path.join(run.dir, `${role}.console.log`), "w");
  // detached: a session of its own (setsid), as the facts doc asks; stdin from /dev/null.
  const nspawn: ChildProcess = spawn(
    "systemd-nspawn",
    [
      "-D",
      dir,
      "--boot",
      "--register=no",
      "--keep-unit",
      `--machine=${name}`,
      "--bind-ro=/usr/bin/node",
      "--bind-ro=/usr/lib/node_modules",
      `--bind-ro=${CA_BUNDLE}`,
      `--bind=${npmCache}:/root/.npm`,
      ...binds.map((b) => `--bind=${b}`),
    ],
    { stdio: ["ignore", log, log], detached: true },
  );
  const nspawnPid = nspawn.pid ?? 0;
  const exited = new Promise<void>((done) => nspawn.on("exit", () => done()));
  let leader = 0;
  /** Ends the container whatever state it is in: its PID 1 takes every process inside with it. */
  const kill = () => {
    for (const pid of [leader, nspawnPid]) {
      try {
        if (pid) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(`/run/systemd/nspawn/propagate/${name}`, { recursive: true, force: true });
  };
  try {
    leader = await until(`${name}'s systemd`, 30_000, async () => {
      const out = execFileSync("pgrep", ["-P", String(nspawnPid), "-x", "systemd"], {
        encoding: "utf8",
      }).trim();
      return out ? Number(out.split("\n")[0]) : undefined;
    });
  } catch (err) {
    kill();
    throw err;
  }

  function sh(script: string, opts: { check?: boolean; timeoutMs?: number } = {}): Promise<ShResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        "nsenter",
        [
          "-t",
          String(leader),
          "-a",
          "env",
          "-i",
          `PATH=${PATH}`,
          "HOME=/root",
          "LANG=C.UTF-8",
          `NODE_EXTRA_CA_CERTS=${CA_BUNDLE}`,
          "sh",
          "-c",
          script,
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => {
        stdout += d;
      });
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        const res = { code, stdout, stderr };
        if (opts.check !== false && code !== 0) {
          reject(
            new Error(`in ${name}: exit ${code}: ${script}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`),
          );
        } else resolve(res);
      });
    });
  }

  const c: Container = {
    name,
    dir,
    file: (p) => path.join(dir, p),
    sh,
    async show(unit, ...props) {
      const { stdout } = await sh(`systemctl show ${unit} ${props.map((p) => `-p ${p}`).join(" ")}`);
      return Object.fromEntries(
        stdout
          .trim()
          .split("\n")
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
    },
    async waitUnit(unit, ok, ms = 60_000, ...props) {
      const want = props.length
        ? props
        : ["ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus", "MainPID"];
      let last: Record<string, string> = {};
      try {
        return await until(`${unit}`, ms, async () => {
          last = await c.show(unit, ...want);
          return ok(last) ? last : undefined;
        });
      } catch {
        const journal = await c.journal(`-u ${unit} -n 30`);
        throw new Error(`${unit} never reached the expected state; last ${JSON.stringify(last)}\n${journal}`);
      }
    },
    async journal(args = "") {
      return (await sh(`journalctl --no-pager -o cat ${args}`, { check: false })).stdout;
    },
    async destroy() {
      if (process.env.SYSTEST_KEEP && !process.env.CI) return; // local debugging: leave it up to look at
      await sh("systemctl poweroff", { check: false, timeoutMs: 10_000 }).catch(() => {});
      await Promise.race([exited, sleep(20_000)]);
      kill();
      await exited;
      closeSync(log);
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await until(`${name} to finish booting`, 60_000, async () => {
      const { stdout } = await sh("systemctl is-system-running", { check: false });
      return ["running", "degraded"].includes(stdout.trim()) ? true : undefined;
    });
  } catch (err) {
    kill();
    throw err;
  }
  return c;
}
