import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { AgentError } from "../core/errors.js";
import type { CommandRunner } from "../host/command.js";
import type { HostFs } from "../host/host-fs.js";
import { webhookPath } from "../manifest/schema.js";

/**
 * The `webhook` binary (adnanh/webhook 2.8) that a host ran before the agent: its unit's ExecStart flags and
 * the HMAC secret and hook id of its hooks file. With `-template` webhook reads the hooks file as a Go
 * template whose `getenv` is its own environment: install resolves `{{ getenv "X" }}` from the environment
 * systemd gave the running process (/proc/<MainPID>/environ: Environment= and EnvironmentFile= as systemd
 * itself parsed them) and refuses every other action, so it never takes template text for the secret.
 */

export const OLD_UNIT = "webhook.service";

/** webhook.service as systemd has it; `enabled` only when it starts at boot (is-enabled says "enabled"). */
export interface OldUnitState {
  enabled: boolean;
  active: boolean;
  /** masked or masked-runtime: it cannot be started, by boot or by hand. */
  masked: boolean;
}

export interface OldListener {
  /** How install found webhook.service: what a failed install puts back. */
  was: { enabled: boolean; active: boolean };
  /** The secret of the hook's payload-hmac-sha256 rule, as webhook uses it. */
  secret: string | undefined;
  hookPath: string;
  port: number;
  host: string;
}

function flagValue(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    const m = new RegExp(`^--?${name}(?:=(.*))?$`).exec(a);
    if (m) return m[1] ?? args[i + 1];
  }
  return undefined;
}

/** A boolean flag as Go's flag package reads it: `-name`, `--name`, `-name=true|1|t|…`. */
function boolFlag(args: string[], name: string): boolean {
  let on = false;
  for (const a of args) {
    const m = new RegExp(`^--?${name}(?:=(.*))?$`).exec(a);
    if (m) on = m[1] === undefined || ["1", "t", "T", "true", "TRUE", "True"].includes(m[1]);
  }
  return on;
}

/** Finds the first HMAC-SHA256 secret in a webhook trigger rule (any nesting of and/or/not). */
function hmacSecret(rule: unknown): string | undefined {
  if (!rule || typeof rule !== "object") return undefined;
  const match = (rule as { match?: { type?: string; secret?: unknown } }).match;
  if (
    match &&
    /^payload-(hmac|hash)-sha256$/.test(match.type ?? "") &&
    typeof match.secret === "string" &&
    match.secret
  )
    return match.secret;
  for (const v of Object.values(rule)) {
    const found = Array.isArray(v) ? v.map(hmacSecret).find(Boolean) : hmacSecret(v);
    if (found) return found;
  }
  return undefined;
}

/**
 * `{{ getenv "X" }}` as Go's text/template writes it: optional trim markers (`{{- `, ` -}}`), any spacing,
 * the name in double or back quotes, and optionally piped through `js`.
 */
const GETENV = /^\{\{(-\s)?\s*getenv\s+(?:"([^"\\]*)"|`([^`]*)`)\s*(\|\s*js\s*)?(\s-)?\}\}$/;
/** Characters Go's `js` function escapes: with none of them it returns its input unchanged. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: Go escapes control characters too
const JS_SPECIAL = /[\\'"<>&=\u0000-\u001f\u0080-\u{10ffff}]/u;

const templateError = (message: string, hint: string) =>
  new AgentError("HOOKS_TEMPLATE_UNRESOLVED", message, { hint });

/** The hooks file's text as webhook -template renders it, from the old listener's environment. */
export function renderHooksTemplate(text: string, env: Map<string, string>, file: string): string {
  const hint = `put the secret in the hooks file itself, or stop and disable ${OLD_UNIT} by hand and set the agent's webhook secret; then install again`;
  let out = "";
  let last = 0;
  for (const m of text.matchAll(/\{\{[\s\S]*?\}\}/g)) {
    const action = m[0];
    const g = GETENV.exec(action);
    if (!g) {
      throw templateError(
        `${file} holds a template action install cannot resolve: ${action.slice(0, 80)}`,
        hint,
      );
    }
    const name = g[2] ?? g[3] ?? "";
    const value = env.get(name);
    if (!value) {
      throw templateError(
        `${file} reads ${name || '""'} with getenv, but ${OLD_UNIT}'s environment ${value === undefined ? "does not set it" : "sets it empty"}`,
        hint,
      );
    }
    if (g[4] && JS_SPECIAL.test(value)) {
      throw templateError(
        `${file} pipes ${name} through js, which escapes some of its characters; install does not reproduce Go's escaping`,
        hint,
      );
    }
    let before = text.slice(last, m.index);
    if (g[1]) before = before.replace(/[ \t\r\n]+$/, "");
    out += before + value;
    last = m.index + action.length;
    if (g[5]) while (/[ \t\r\n]/.test(text[last] ?? "")) last++;
  }
  return out + text.slice(last);
}

/** The environment of a running process: what webhook's getenv returns (the first of a repeated name). */
async function processEnvironment(pid: number): Promise<Map<string, string>> {
  const raw = await readFile(`/proc/${pid}/environ`, "utf8");
  const env = new Map<string, string>();
  for (const entry of raw.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0 && !env.has(entry.slice(0, eq))) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

/** What reading the old listener needs: systemctl questions and the host's files (reads in a dry run too). */
export interface OldListenerHost {
  run: CommandRunner;
  host: Pick<HostFs, "read">;
  commands: { systemctl: readonly string[] };
}

/**
 * systemctl's answers about webhook.service. is-active's "no" exits non-zero: an answer, not a failure;
 * its unit file state (enabled, disabled, masked, static, … or nothing: no such unit) from `show`, which
 * says it with exit 0.
 */
export async function oldUnitState(ctx: OldListenerHost): Promise<OldUnitState> {
  const ask = (...args: string[]) => ctx.run([...ctx.commands.systemctl, ...args, OLD_UNIT], { query: true });
  const active = await ask("is-active").then(
    (r) => r.stdout.trim() === "active",
    () => false,
  );
  const state = (await ask("show", "-p", "UnitFileState", "--value")).stdout.trim();
  return { enabled: state === "enabled", active, masked: state.startsWith("masked") };
}

/** webhook.service's command line (its last ExecStart=) and the hooks file it names. */
async function oldCommandLine(ctx: OldListenerHost): Promise<{ args: string[]; hooksFile: string }> {
  const unit = (await ctx.run([...ctx.commands.systemctl, "cat", OLD_UNIT], { query: true })).stdout;
  const exec = unit
    .split("\n")
    .filter((l) => /^ExecStart=\S/.test(l))
    .pop();
  const args = exec?.replace(/^ExecStart=[-@:+!]*/, "").split(/\s+/) ?? [];
  return { args, hooksFile: flagValue(args, "hooks") ?? "/etc/webhook/hooks.json" };
}

/**
 * Whether webhook.service has hooks to serve: Debian's package enables the unit with no hooks file (its
 * ConditionPathExists= keeps it from starting), and a listener without hooks was never this host's.
 */
export async function oldHooksExist(ctx: OldListenerHost): Promise<boolean> {
  const { hooksFile } = await oldCommandLine(ctx);
  return (await ctx.host.read(hooksFile).catch(() => Buffer.alloc(1))) !== null;
}

/** webhook.service's setup (its unit found `was`), to migrate from. */
export async function readOldListener(
  ctx: OldListenerHost,
  was: { enabled: boolean; active: boolean },
): Promise<OldListener> {
  const ask = (...args: string[]) => ctx.run([...ctx.commands.systemctl, ...args], { query: true });
  const { args, hooksFile } = await oldCommandLine(ctx);
  const unreadable = (why: string) =>
    new AgentError("CONFIG_INVALID", `cannot read the old hooks file ${hooksFile}: ${why}`, {
      hint: `fix or remove it, or stop and disable ${OLD_UNIT} by hand (systemctl disable --now ${OLD_UNIT}) and install again`,
    });
  const data = await ctx.host.read(hooksFile).catch((err: Error) => {
    throw unreadable((err.cause as NodeJS.ErrnoException | undefined)?.code ?? err.message);
  });
  if (!data) throw unreadable("it does not exist");
  let text = data.toString("utf8");
  if (boolFlag(args, "template")) {
    const shown = await ask("show", "-p", "MainPID", "--value", OLD_UNIT);
    const pid = Number(shown.stdout.trim());
    const env = await (pid > 0 ? processEnvironment(pid) : Promise.reject(new Error("no MainPID"))).catch(
      (err: Error) => {
        throw templateError(
          `${hooksFile} is a template (-template) and ${OLD_UNIT}'s environment cannot be read: ${err.message}`,
          `run install as root while ${OLD_UNIT} is running (systemctl start ${OLD_UNIT})`,
        );
      },
    );
    text = renderHooksTemplate(text, env, hooksFile);
  }
  let hooks: unknown;
  try {
    hooks = parseYaml(text);
  } catch (err) {
    // Only where: the parser's message quotes the line, which may be the secret's.
    const at = (err as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    const code = (err as { code?: unknown }).code;
    throw unreadable(
      `not JSON or YAML install can parse (${typeof code === "string" ? `${code} ` : ""}${at ? `at line ${at.line}, column ${at.col}` : "somewhere"})`,
    );
  }
  const list = Array.isArray(hooks) ? (hooks as { id?: string; "trigger-rule"?: unknown }[]) : [];
  const hook = list.find((h) => hmacSecret(h["trigger-rule"])) ?? list[0];
  const secret = hmacSecret(hook?.["trigger-rule"]);
  if (secret && /\{\{[\s\S]*\}\}/.test(secret)) {
    throw templateError(
      `the secret in ${hooksFile} is a template, but ${OLD_UNIT} runs webhook without -template, which takes it literally`,
      `add -template to ${OLD_UNIT}'s ExecStart (and check Gitea still delivers), or set the agent's webhook secret by hand; then install again`,
    );
  }
  const prefix = flagValue(args, "urlprefix") ?? "hooks";
  const hookPath = `/${prefix}/${hook?.id ?? "deploy"}`.replace(/\/+/g, "/");
  const port = Number(flagValue(args, "port") ?? 9000);
  const host = flagValue(args, "ip") ?? "0.0.0.0";
  // They go into a unit drop-in (Environment=): only what the agent itself would accept.
  if (
    !webhookPath.safeParse(hookPath).success ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535 ||
    !/^[A-Za-z0-9.:-]+$/.test(host)
  ) {
    throw new AgentError(
      "CONFIG_INVALID",
      `${OLD_UNIT} listens on ${host}:${port}${hookPath}, which the agent cannot take over`,
      {
        hint: `give the hook a plain id (letters, digits, . _ ~ -), or stop and disable ${OLD_UNIT} by hand and install again`,
      },
    );
  }
  return { was: { enabled: was.enabled, active: was.active }, secret, hookPath, port, host };
}
