import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PROJECT } from "./agent.js";

/**
 * A `systemctl` put first on PATH that runs units as real processes, for install's tests away from systemd
 * (test/system/ has the real one). `deploy-agent@HOST.service` is the real daemon (`deploy-agent serve` of
 * the host root's config clone) with the Environment= of its drop-ins under the root's /etc and /run;
 * `webhook.service` is a listener standing in for the webhook binary: it answers POST on the unit's -port
 * with 200, runs with the unit's Environment=, and exposes its MainPID. Every call is logged;
 * `failOn("restart deploy-agent@lxctest.service", 2)` makes the 2nd such call exit 1 as systemd does when a
 * unit hits its start limit.
 */
export interface UnitRunner {
  calls(): string[];
  failOn(command: string, nth?: number): void;
  /** Stops every process it started and takes itself off PATH. */
  restore(): Promise<void>;
}

const SCRIPT = String.raw`
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const [dir, root, project] = [process.env.UNIT_RUNNER_DIR, process.env.UNIT_RUNNER_ROOT, process.env.UNIT_RUNNER_PROJECT];
const args = process.argv.slice(2);
const line = args.join(" ");
fs.appendFileSync(path.join(dir, "calls.log"), line + "\n");
const counts = JSON.parse(fs.existsSync(path.join(dir, "counts.json")) ? fs.readFileSync(path.join(dir, "counts.json"), "utf8") : "{}");
counts[line] = (counts[line] || 0) + 1;
fs.writeFileSync(path.join(dir, "counts.json"), JSON.stringify(counts));
const fail = JSON.parse(fs.existsSync(path.join(dir, "fail.json")) ? fs.readFileSync(path.join(dir, "fail.json"), "utf8") : "{}");
if (fail[line] === counts[line]) {
  console.error("Job for " + args[args.length - 1] + " failed because the service start limit was hit.");
  process.exit(1);
}
const pidFile = (unit) => path.join(dir, unit + ".pid");
const pidOf = (unit) => { try { return Number(fs.readFileSync(pidFile(unit), "utf8")); } catch { return 0; } };
const alive = (pid) => { if (!pid) return false; try { process.kill(pid, 0); return true; } catch { return false; } };
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
function stop(unit) {
  const pid = pidOf(unit);
  if (alive(pid)) {
    process.kill(pid, "SIGTERM");
    for (let i = 0; i < 400 && alive(pid); i++) sleep(25);
    if (alive(pid)) process.kill(pid, "SIGKILL");
  }
  fs.rmSync(pidFile(unit), { force: true });
}
/** Environment= lines of the unit file and its drop-ins (by file name, /run and /etc together). */
function environment(unit, files) {
  const env = {};
  for (const f of files) {
    for (const m of fs.readFileSync(f, "utf8").matchAll(/^Environment=(.*)$/gm)) {
      const a = m[1].replace(/^"(.*)"$/, "$1");
      env[a.slice(0, a.indexOf("="))] = a.slice(a.indexOf("=") + 1);
    }
  }
  return env;
}
function dropIns(unit) {
  const found = [];
  for (const base of ["etc/systemd/system", "run/systemd/system"]) {
    const d = path.join(root, base, unit + ".d");
    if (fs.existsSync(d)) for (const n of fs.readdirSync(d)) if (n.endsWith(".conf")) found.push([n, path.join(d, n)]);
  }
  return found.sort((a, b) => a[0].localeCompare(b[0])).map((x) => x[1]);
}
function start(unit) {
  stop(unit);
  const log = fs.openSync(path.join(dir, unit + ".log"), "a");
  let child;
  if (unit === "webhook.service") {
    const file = path.join(root, "etc/systemd/system/webhook.service");
    const exec = /^ExecStart=(.*)$/m.exec(fs.readFileSync(file, "utf8"))[1];
    const port = Number(/-port\s+(\d+)/.exec(exec)[1]);
    const server = "require('node:http').createServer((q, s) => { q.resume(); s.end('ok'); }).listen(" + port + ", '127.0.0.1')";
    child = spawn(process.execPath, ["-e", server], {
      env: { PATH: process.env.PATH, ...environment(unit, [file, ...dropIns(unit)]) },
      detached: true, stdio: ["ignore", log, log],
    });
  } else {
    const host = /^deploy-agent@(.*)\.service$/.exec(unit)[1];
    child = spawn(process.execPath, ["--import", "tsx", "--", path.join(project, "src/bin.ts"), "serve",
      "--config", path.join(root, "opt/matrix-config/config", host + ".yaml"), "--root", root], {
      cwd: project, env: { ...process.env, ...environment(unit, dropIns(unit)) },
      detached: true, stdio: ["ignore", log, log],
    });
  }
  fs.writeFileSync(pidFile(unit), String(child.pid));
  child.unref();
  sleep(150);
  if (!alive(child.pid)) { console.error("Job for " + unit + " failed."); process.exit(1); }
}
const [verb, ...rest] = args;
const flags = rest.filter((a) => a.startsWith("-"));
const units = rest.filter((a) => !a.startsWith("-"));
const unit = units[units.length - 1];
const enabled = (u) => fs.existsSync(path.join(dir, u + ".enabled"));
switch (verb) {
  case "is-active":
    console.log(alive(pidOf(unit)) ? "active" : "inactive");
    process.exit(alive(pidOf(unit)) ? 0 : 3);
  case "is-enabled":
    console.log(enabled(unit) ? "enabled" : "disabled");
    process.exit(enabled(unit) ? 0 : 1);
  case "cat":
    process.stdout.write(fs.readFileSync(path.join(root, "etc/systemd/system", unit), "utf8"));
    break;
  case "show":
    console.log(alive(pidOf(unit)) ? pidOf(unit) : 0);
    break;
  case "start":
  case "restart":
    start(unit);
    break;
  case "stop":
    stop(unit);
    break;
  case "enable":
    fs.writeFileSync(path.join(dir, unit + ".enabled"), "");
    if (flags.includes("--now")) start(unit);
    break;
  case "disable":
    fs.rmSync(path.join(dir, unit + ".enabled"), { force: true });
    if (flags.includes("--now")) stop(unit);
    break;
}
`;

export function installUnitRunner(root: string): UnitRunner {
  const dir = mkdtempSync(path.join(tmpdir(), "unit-runner-"));
  const script = path.join(dir, "systemctl");
  writeFileSync(script, `#!${process.execPath}\n${SCRIPT}`);
  chmodSync(script, 0o755);
  writeFileSync(path.join(dir, "calls.log"), "");
  const saved = { PATH: process.env.PATH };
  process.env.PATH = `${dir}:${process.env.PATH}`;
  process.env.UNIT_RUNNER_DIR = dir;
  process.env.UNIT_RUNNER_ROOT = root;
  process.env.UNIT_RUNNER_PROJECT = PROJECT;
  const fail: Record<string, number> = {};
  return {
    calls: () => readFileSync(path.join(dir, "calls.log"), "utf8").split("\n").filter(Boolean),
    failOn(command, nth = 1) {
      fail[command] = nth;
      writeFileSync(path.join(dir, "fail.json"), JSON.stringify(fail));
    },
    async restore() {
      for (const unit of ["webhook.service", "deploy-agent@lxctest.service"]) {
        try {
          process.kill(Number(readFileSync(path.join(dir, `${unit}.pid`), "utf8")), "SIGKILL");
        } catch {
          // never started, or already gone
        }
      }
      process.env.PATH = saved.PATH;
      delete process.env.UNIT_RUNNER_DIR;
      delete process.env.UNIT_RUNNER_ROOT;
      delete process.env.UNIT_RUNNER_PROJECT;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
