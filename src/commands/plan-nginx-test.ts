import { chmod, chown, mkdir } from "node:fs/promises";
import path from "node:path";
import {
  type ConfinedNginx,
  confineNginxPaths,
  type NginxDirective,
  nginxDirectives,
} from "../content/nginx-conf.js";
import type { Snapshot } from "../source/snapshot.js";
import {
  type HostTools,
  type PlanCheck,
  runTool,
  scratch,
  tail,
  unprivileged,
  writeInside,
} from "./plan-tool-run.js";

/**
 * `nginx -t` of a file step's nginx snippet: included inside http {} in a scratch configuration, its log,
 * temp, cache and socket paths moved into the scratch directory, run as the unprivileged user.
 */

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

export async function nginxTest(
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
