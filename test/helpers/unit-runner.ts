import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PROJECT } from "./agent.js";

/**
 * A `systemctl` put first on PATH that runs units as real processes, for install's tests away from systemd
 * (test/system/ has the real one). `deploy-agent@HOST.service` is the real daemon (`deploy-agent serve` of
 * the host root's config clone) with the Environment= of its unit file and drop-ins under the root's /etc
 * and /run; `webhook.service` is a listener standing in for the webhook binary: it answers POST on the
 * unit's -port with 200, runs with the unit's Environment=, and exposes its MainPID.
 * `show -p MainPID|UnitFileState|Environment [--value]` answers as systemd 252 does (Environment= resolved
 * from the unit file and its drop-ins, each item quoted as systemctl quotes it); a masked unit refuses to
 * start or enable as under systemd. Every call is logged; `failOn("restart deploy-agent@lxctest.service", 2)`
 * makes the 2nd such call exit 1 as systemd does when a unit hits its start limit.
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
/** The unit's file: its own, else its template's (deploy-agent@.service); null when it has none. */
function unitFile(unit) {
  const template = unit.replace(/@[^.]*\./, "@.");
  for (const name of [unit, template]) {
    const f = path.join(root, "etc/systemd/system", name);
    if (fs.existsSync(f)) return f;
  }
  return null;
}
/**
 * Drop-ins as systemd finds them: the instance's and the template's, under /etc and /run; one of a file name
 * (the first of /etc before /run, the instance before the template) wins; read in file-name order.
 */
function dropIns(unit) {
  const byName = new Map();
  for (const base of ["etc/systemd/system", "run/systemd/system"]) {
    for (const name of [unit, unit.replace(/@[^.]*\./, "@.")]) {
      const d = path.join(root, base, name + ".d");
      if (!fs.existsSync(d)) continue;
      for (const n of fs.readdirSync(d)) if (n.endsWith(".conf") && !byName.has(n)) byName.set(n, path.join(d, n));
    }
  }
  return [...byName.keys()].sort().map((n) => byName.get(n));
}
/** systemd's specifiers in Environment= that a test may use: %i, %n, %p, %%. */
function specifiers(unit, text) {
  const m = /^([^@.]*)(?:@([^.]*))?\./.exec(unit) || [];
  const table = { i: m[2] || "", n: unit, p: m[1] || "", "%": "%" };
  return text.replace(/%(.)/g, (all, c) => {
    if (!(c in table)) throw new Error("unknown specifier %" + c);
    return table[c];
  });
}
const C_ESCAPES = { a: "\x07", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", v: "\v" };
/** Words as systemd's extract_first_word splits them with UNQUOTE|CUNESCAPE: quotes anywhere, C escapes. */
function words(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    while (/\s/.test(text[i] || "")) i++;
    if (i >= text.length) break;
    let word = "";
    let quote = null;
    for (; i < text.length; i++) {
      const c = text[i];
      if (!quote && /\s/.test(c)) break;
      if (c === "\\" && i + 1 < text.length) {
        const e = text[++i];
        if (e === "x") { word += String.fromCharCode(parseInt(text.slice(i + 1, i + 3), 16)); i += 2; }
        else word += C_ESCAPES[e] ?? e;
      } else if (quote ? c === quote : c === '"' || c === "'") quote = quote ? null : c;
      else word += c;
    }
    out.push(word);
  }
  return out;
}
/**
 * The unit's Environment= as systemd resolves it: the unit file, then its drop-ins; an empty Environment=
 * resets the list; a later assignment of a name replaces the earlier one in place; a drop-in that cannot be
 * read (a link to /dev/null masks one, a dangling link) sets nothing.
 */
function environment(unit) {
  const env = new Map();
  for (const f of [unitFile(unit), ...dropIns(unit)].filter(Boolean)) {
    let text = "";
    try { text = fs.readFileSync(f, "utf8"); } catch { continue; }
    for (const m of text.matchAll(/^[ \t]*Environment=(.*)$/gm)) {
      if (!m[1].trim()) { env.clear(); continue; }
      for (const w of words(specifiers(unit, m[1]))) {
        const eq = w.indexOf("=");
        if (eq > 0 && /^[A-Za-z_][A-Za-z0-9_]*$/.test(w.slice(0, eq))) env.set(w.slice(0, eq), w.slice(eq + 1));
      }
    }
  }
  return env;
}
/** systemd's shell_maybe_quote(s, 0): how systemctl show prints each item of a list of strings. */
function shellMaybeQuote(s) {
  const first = [...s].findIndex((c) => c < " " || c === "\x7f" || ' \t\n\r"\\\x60$*?[\'()<>|&;!'.includes(c));
  if (first < 0) return s;
  let out = '"' + [...s].slice(0, first).join("");
  for (const c of [...s].slice(first)) {
    const cc = Object.entries(C_ESCAPES).find(([, v]) => v === c);
    if (cc) out += "\\" + cc[0];
    else if (c < " " || c === "\x7f") out += "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
    else out += ('"\\\x60$'.includes(c) ? "\\" : "") + c;
  }
  return out + '"';
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
      env: { PATH: process.env.PATH, ...Object.fromEntries(environment(unit)) },
      detached: true, stdio: ["ignore", log, log],
    });
  } else {
    const host = /^deploy-agent@(.*)\.service$/.exec(unit)[1];
    child = spawn(process.execPath, ["--import", "tsx", "--", path.join(project, "src/bin.ts"), "serve",
      "--config", path.join(root, "opt/matrix-config/config", host + ".yaml"), "--root", root], {
      cwd: project, env: { ...process.env, ...Object.fromEntries(environment(unit)) },
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
const units = rest.filter((a, i) => !a.startsWith("-") && rest[i - 1] !== "-p");
const unit = units[units.length - 1];
const marker = (u, what) => path.join(dir, u + "." + what);
const enabled = (u) => fs.existsSync(marker(u, "enabled"));
const masked = (u) => fs.existsSync(marker(u, "masked"));
const fileState = (u) => (masked(u) ? "masked" : enabled(u) ? "enabled" : "disabled");
/** What systemd says when a masked unit is to be started or enabled. */
function refuseMasked(what) {
  if (!masked(unit)) return;
  console.error("Failed to " + what + " " + unit + ": Unit " + unit + " is masked.");
  process.exit(1);
}
switch (verb) {
  case "is-active":
    console.log(alive(pidOf(unit)) ? "active" : "inactive");
    process.exit(alive(pidOf(unit)) ? 0 : 3);
  case "is-enabled": {
    const state = fileState(unit);
    console.log(state);
    process.exit(state === "enabled" ? 0 : 1);
  }
  case "cat":
    if (masked(unit)) console.log("# Unit " + unit + " is masked.");
    else process.stdout.write(fs.readFileSync(unitFile(unit), "utf8"));
    break;
  case "show": {
    // One property per -p, as systemctl prints them: NAME=value, or the value alone with --value.
    const props = rest.flatMap((a, i) => (rest[i - 1] === "-p" ? a.split(",") : []));
    for (const p of props) {
      const value =
        p === "MainPID" ? String(alive(pidOf(unit)) ? pidOf(unit) : 0)
        : p === "UnitFileState" ? fileState(unit)
        : p === "Environment" ? [...environment(unit)].map(([k, v]) => shellMaybeQuote(k + "=" + v)).join(" ")
        : null;
      if (value === null) { console.error("the stand-in systemctl does not know the property " + p); process.exit(1); }
      console.log(flags.includes("--value") ? value : p + "=" + value);
    }
    break;
  }
  case "start":
  case "restart":
    refuseMasked(verb);
    start(unit);
    break;
  case "stop":
    stop(unit);
    break;
  case "enable":
    refuseMasked("enable");
    fs.writeFileSync(marker(unit, "enabled"), "");
    if (flags.includes("--now")) start(unit);
    break;
  case "disable":
    // A masked unit: systemd says it ignores it, and exits 0.
    if (!masked(unit)) fs.rmSync(marker(unit, "enabled"), { force: true });
    if (flags.includes("--now")) stop(unit);
    break;
  case "mask":
    fs.writeFileSync(marker(unit, "masked"), "");
    break;
  case "unmask":
    fs.rmSync(marker(unit, "masked"), { force: true });
    break;
  case "daemon-reload":
    break;
  default:
    console.error("the stand-in systemctl does not know " + verb);
    process.exit(1);
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
