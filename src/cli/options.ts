import type { CommonFlags } from "../commands/options.js";
import type { Call, OptionSpec } from "./spec.js";

/**
 * The options several commands share, each declared once; a command that means something more precise by
 * one gives it its own help with `{ ...OPT.step, help }`.
 */

/** A number of seconds as Number() reads it (so 1.5 and 1e3 too); NaN when blank or not finite. */
export function seconds(v: string): number {
  const n = v.trim() ? Number(v) : Number.NaN;
  return Number.isFinite(n) ? n : Number.NaN;
}

const opt = <const N extends string>(o: OptionSpec<N>) => o;

/** The most records `history --limit` and `fleet history --limit` take. */
export const MAX_HISTORY_LIMIT = 10_000;

/** The longest --reason (suspend, pin): what the deploy history keeps of one. */
export const MAX_REASON_CHARS = 500;

/** A control character other than the tab (a line break among them), a line or paragraph separator, a bidi control. */
const UNPRINTABLE = /[^\P{Cc}\t]|[\p{Zl}\p{Zp}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;

/** The longest `fleet wait --timeout`: a day; a typo of a few digits must not wait a month. */
export const MAX_WAIT_SECONDS = 86_400;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const;

export const OPT = {
  config: opt({
    name: "config",
    arg: "FILE",
    path: true,
    help: "the host manifest (config/<host>.yaml); default $DEPLOY_AGENT_CONFIG",
  }),
  root: opt({
    name: "root",
    arg: "DIR",
    path: true,
    help: "treat DIR as / for every host path of the manifest (staging, tests, demos)",
  }),
  repo: opt({
    name: "repo",
    arg: "DIR",
    path: true,
    help: "the config repo clone (default: the manifest's repo.path, under --root)",
  }),
  stateDir: opt({
    name: "state-dir",
    arg: "DIR",
    path: true,
    help: "where state.json and the lock live (default: the manifest's stateDir, under --root)",
  }),
  envFile: opt({
    name: "env-file",
    arg: "FILE",
    path: true,
    help: `the dotenv file for \${VAR} (default: the manifest's envFile, under --root)`,
  }),
  json: opt({ name: "json", help: "print a versioned JSON document instead of text" }),
  logLevel: opt({
    name: "log-level",
    arg: "LEVEL",
    choices: LOG_LEVELS,
    help: "the least level logged (default: the manifest's log.level)",
  }),
  dryRun: opt({ name: "dry-run", help: "describe what it would do; change nothing" }),
  step: opt({ name: "step", arg: "NAME", repeat: true, help: "only this step (repeatable)" }),
  noFetch: opt({ name: "no-fetch", help: "do not fetch; take the remote-tracking branch as it is" }),
  wait: opt({
    name: "wait",
    arg: "SECONDS",
    help: "wait this long for another run's lock (default 0: fail at once)",
    check: (v) => (seconds(v) >= 0 ? undefined : "--wait takes a number of seconds"),
  }),
  force: opt({ name: "force", help: "do it even where it would refuse" }),
  reason: opt({
    name: "reason",
    arg: "TEXT",
    help: `why, shown by status, /status and fleet status (one line, at most ${MAX_REASON_CHARS} characters)`,
    // It is kept in the state and shown on other terminals and in notices: one plain line that reads the same there.
    check: (v) =>
      v === ""
        ? "--reason takes TEXT, not an empty value"
        : [...v].length > MAX_REASON_CHARS || UNPRINTABLE.test(v)
          ? `--reason takes one line of at most ${MAX_REASON_CHARS} characters, without control characters`
          : undefined,
  }),
  limit: opt({
    name: "limit",
    arg: "N",
    help: `at most N records (default 20, 1 to ${MAX_HISTORY_LIMIT})`,
    check: (v) =>
      /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= MAX_HISTORY_LIMIT
        ? undefined
        : `--limit takes a whole number from 1 to ${MAX_HISTORY_LIMIT}, not "${v}"`,
  }),
  tokenFile: opt({
    name: "token-file",
    arg: "FILE",
    path: true,
    help: "the bearer token for agents with webhook.statusAccess",
  }),
  timeout: opt({
    name: "timeout",
    arg: "SECONDS",
    help: `give up after this long (default 300, at most ${MAX_WAIT_SECONDS})`,
    check: (v) =>
      seconds(v) >= 1 && seconds(v) <= MAX_WAIT_SECONDS
        ? undefined
        : `--timeout takes a number of seconds from 1 to ${MAX_WAIT_SECONDS}, not "${v}"`,
  }),
} as const;

/** The options of every command that works on this host's manifest. */
export const HOST_OPTIONS = [
  OPT.config,
  OPT.root,
  OPT.repo,
  OPT.stateDir,
  OPT.envFile,
  OPT.json,
  OPT.logLevel,
] as const;

type HostOption = (typeof HOST_OPTIONS)[number]["name"];

/** The host options' values as the command modules take them. */
export function hostFlags(call: Call<HostOption>): CommonFlags {
  return {
    config: call.string("config"),
    root: call.string("root"),
    repo: call.string("repo"),
    stateDir: call.string("state-dir"),
    envFile: call.string("env-file"),
    json: call.flag("json"),
    logLevel: call.string("log-level"),
  };
}
