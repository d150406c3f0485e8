import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { AgentError, type ErrorCode } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import { readPrivateFile } from "../gitea/webhook-secret.js";
import { httpRequest } from "../host/http-client.js";
import { type FleetStatus, fleetStatusSchema, refusal } from "../server/status-model.js";

/**
 * The fleet's hosts as the operator's clone names them (config/*.yaml), and each agent's answer at a route,
 * asked in parallel: its answer is read to MAX_ANSWER_BYTES within ASK_TIMEOUT_MS (the whole body, not only the
 * headers), and a redirect is never followed.
 */

export interface FleetFlags {
  repo?: string | undefined;
  json: boolean;
  tokenFile?: string | undefined;
  timeoutSeconds: number;
}

/** How long one agent has to answer, headers and body. */
export const ASK_TIMEOUT_MS = 3000;

/** The most an agent's answer may be: a fleet command's memory is its own, never what a host sends. */
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

export interface HostEntry {
  host: string;
  /** The manifest it was read from, relative to the clone. */
  file: string;
  url: string | null;
  /** The branch the host deploys (its manifest's repo.branch; main by default). */
  branch: string;
  /** Why the host cannot be asked (its manifest), or null. */
  problem: string | null;
  /** The problem's code: what kind of thing is wrong, the same whatever its words. */
  code: FleetCode | null;
}

/** The codes of a host's problem, each with what to do about it in fleet's terms. */
export const FLEET_HINTS = {
  CONFIG_INVALID: "fix the file in config/: fleet reads its host, publicUrl and repo.branch",
  HTTP_UNAVAILABLE: "check that the agent runs and that its publicUrl is reachable from here",
  HTTP_REFUSED:
    "what answers at the URL is not the agent's answer as fleet reads it (HTTP 401: pass --token-file)",
} as const satisfies Partial<Record<ErrorCode, string>>;
export type FleetCode = keyof typeof FLEET_HINTS;

/** One `hint:` line for each code among the hosts' problems. */
export const hintLines = (hosts: readonly { code: FleetCode | null }[]): string[] =>
  [...new Set(hosts.flatMap((h) => (h.code ? [h.code] : [])))].map((c) => `hint: ${c}: ${FLEET_HINTS[c]}`);

export interface Answer extends HostEntry {
  answer: unknown;
}

export interface Host extends HostEntry {
  status: FleetStatus | null;
}

const BRANCH = /^[A-Za-z0-9_][A-Za-z0-9._/-]*$/;

/** The manifest schema's rule for a host name: it is printed at the start of a row. */
const HOST = /^[a-z0-9][a-z0-9-]*$/;
/** A manifest naming no valid host is shown under its file's name, with what a host name cannot have as `_`. */
const fileHost = (file: string) => path.basename(file, ".yaml").replace(/[^a-z0-9-]/g, "_");

/** The agent's URL: http(s) only, without a trailing slash; null when it is not one. */
function agentUrl(value: unknown): string | null {
  if (typeof value !== "string") return null;
  try {
    const u = new URL(value);
    return u.protocol === "http:" || u.protocol === "https:" ? value.replace(/\/+$/, "") : null;
  } catch {
    return null;
  }
}

/**
 * Every config/*.yaml, one entry each: a file that is not YAML, names no valid host or a host another file
 * names too, or has no http(s) publicUrl, is an entry with its problem, so that `fleet wait` never counts a
 * host it cannot see as done.
 */
export async function fleetHosts(repo: string): Promise<HostEntry[]> {
  const dir = path.join(repo, "config");
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(".yaml")).sort();
  if (!names.length)
    throw new AgentError("USAGE", `no host manifests in ${dir}`, {
      hint: "run it in a clone of the config repository, or pass --repo DIR",
    });
  const out: HostEntry[] = [];
  for (const n of names) {
    const file = `config/${n}`;
    let doc: { host?: unknown; publicUrl?: unknown; repo?: { branch?: unknown } } | null;
    try {
      // Only host, publicUrl and repo.branch are read: no ${VAR} is needed on an operator's machine.
      doc = parseYaml(await readFile(path.join(dir, n), "utf8"));
    } catch (err) {
      const why = (err as Error).message.split("\n")[0] ?? "";
      out.push({
        host: fileHost(n),
        file,
        url: null,
        branch: "main",
        problem: `${file} is not YAML: ${why}`,
        code: "CONFIG_INVALID",
      });
      continue;
    }
    const host = typeof doc?.host === "string" && HOST.test(doc.host) ? doc.host : null;
    const url = agentUrl(doc?.publicUrl);
    const branch = doc?.repo?.branch;
    const problem = !host
      ? `${file} names no host (lowercase letters, digits and dashes)`
      : !url
        ? doc?.publicUrl === undefined
          ? `no publicUrl in ${file}`
          : `${file}: publicUrl is not an http(s) URL`
        : null;
    out.push({
      host: host ?? fileHost(n),
      file,
      url,
      // A branch name goes into a refspec: only a plain one (no wildcard, no option, no "..").
      branch: typeof branch === "string" && BRANCH.test(branch) && !branch.includes("..") ? branch : "main",
      problem,
      code: problem ? "CONFIG_INVALID" : null,
    });
  }
  for (const h of out) {
    const others = out.filter((o) => o !== h && o.host === h.host).map((o) => o.file);
    if (others.length && !h.problem) {
      h.problem = `${others.join(", ")} names host ${h.host} too: a host has one manifest`;
      h.code = "CONFIG_INVALID";
    }
  }
  return out;
}

/** --token-file: the hosts' status token, in a file private to the user running fleet. */
async function bearerToken(file: string): Promise<string> {
  const value = (await readPrivateFile(path.resolve(file), "status token file"))?.trim();
  if (!value) {
    throw new AgentError("USAGE", `--token-file ${file} is missing or empty`, {
      hint: "the file holds the hosts' webhook.statusAccess token (mode 0600)",
    });
  }
  return value;
}

/** JSON's value, or undefined for what is not JSON. */
function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

class TooLarge extends Error {}

const fail = (code: FleetCode, problem: string) => ({ answer: null, problem, code });

/** One agent's answer at `route`: its JSON, or why not. `signal` cuts it short (fleet wait's deadline). */
async function askOne(entry: HostEntry, route: string, token: string | undefined, signal?: AbortSignal) {
  const { url } = entry;
  if (!url || entry.problem) return fail("CONFIG_INVALID", entry.problem ?? `no publicUrl in ${entry.file}`);
  const where = `${url}${route.split("?")[0]}`;
  const timeout = AbortSignal.timeout(ASK_TIMEOUT_MS);
  try {
    // node:http: a redirect is an answer like any other, never followed, so the token reaches no other URL.
    const res = await httpRequest(`${url}${route}`, {
      signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      readBody: (status) => status >= 200 && status < 300,
      maxBytes: MAX_ANSWER_BYTES,
      onTooLarge: (max) => new TooLarge(`answered more than ${max} bytes`),
    });
    if (res.status >= 300 && res.status < 400)
      return fail("HTTP_REFUSED", `${where} answered a redirect (HTTP ${res.status}), not followed`);
    if (!res.ok)
      return fail(
        res.status >= 500 ? "HTTP_UNAVAILABLE" : "HTTP_REFUSED",
        `${where} unreachable: HTTP ${res.status}`,
      );
    const answer = jsonOf(res.text);
    if (answer === undefined) return fail("HTTP_REFUSED", `${where} answered something that is not JSON`);
    return { answer, problem: null, code: null };
  } catch (err) {
    if (err instanceof TooLarge) return fail("HTTP_REFUSED", `${where} ${err.message}`);
    if (signal?.aborted && !timeout.aborted)
      return fail("HTTP_UNAVAILABLE", `${where} unreachable: no answer within fleet wait's --timeout`);
    return fail("HTTP_UNAVAILABLE", `${where} unreachable: ${fetchFailure(err, ASK_TIMEOUT_MS)}`);
  }
}

/** Every host's answer at `route` (its JSON, or null and why not), asked in parallel; `signal` cuts each short. */
export async function askAll(flags: FleetFlags, route: string, signal?: AbortSignal): Promise<Answer[]> {
  const repo = path.resolve(flags.repo ?? ".");
  const token = flags.tokenFile ? await bearerToken(flags.tokenFile) : undefined;
  const entries = await fleetHosts(repo);
  return Promise.all(entries.map(async (e) => ({ ...e, ...(await askOne(e, route, token, signal)) })));
}

/** Every host's /status, checked with the status model: a host that lies gets named with the field, never trusted. */
export async function askStatus(flags: FleetFlags, signal?: AbortSignal): Promise<Host[]> {
  return (await askAll(flags, "/status", signal)).map(({ answer, ...h }) => {
    if (h.problem) return { ...h, status: null };
    const parsed = fleetStatusSchema.safeParse(answer);
    return parsed.success
      ? { ...h, status: parsed.data }
      : {
          ...h,
          status: null,
          problem: `${h.url}/status answered something that is not an agent's status: ${refusal(parsed.error)}`,
          code: "HTTP_REFUSED" as const,
        };
  });
}
