import { type ParseArgsConfig, parseArgs } from "node:util";
import { AgentError } from "../core/errors.js";
import { usageLine } from "./help.js";
import { type Call, type CommandSpec, isGroup, type Leaf, type OptionSpec, type Out } from "./spec.js";
import { closest } from "./suggest.js";

/**
 * argv → what to do, read from the declarations alone: the version, a help text, or one command with its
 * checked values. Every mistake is a USAGE error (exit 2), with the closest name in the hint; an option the
 * command does not declare is never ignored. Node's util.parseArgs reads the words; what it cannot say
 * (which command an option belongs to, an option given twice, a value outside its choices) is said here.
 */

export type Parsed =
  | { kind: "version" }
  | { kind: "help"; path: CommandSpec[] }
  | { kind: "run"; path: CommandSpec[]; leaf: Leaf; call: Call };

const HELP = { name: "help", help: "this text" } satisfies OptionSpec;

/** A word the operator typed, quoted with its control characters escaped: it never drives the terminal. */
const quote = (word: string) => JSON.stringify(word);

function usage(message: string, hint: string): AgentError {
  return new AgentError("USAGE", message, { hint });
}

const didYouMean = (word: string, names: readonly string[], prefix = "") => {
  const near = closest(word, names);
  return near ? `did you mean ${prefix}${near}? ` : "";
};

/** Every option any command declares, by name: the first pass reads argv with all of them. */
function allOptions(commands: readonly CommandSpec[]): Map<string, OptionSpec> {
  const all = new Map<string, OptionSpec>();
  for (const leaf of leaves(commands)) for (const o of leaf.options) if (!all.has(o.name)) all.set(o.name, o);
  return all;
}

export function leaves(commands: readonly CommandSpec[]): Leaf[] {
  return commands.flatMap((c) => (isGroup(c) ? c.subcommands : [c]));
}

/** Each command as it is typed ("run", "fleet wait"), with its declaration. */
function named(commands: readonly CommandSpec[]): [string, Leaf][] {
  return commands.flatMap((c): [string, Leaf][] =>
    isGroup(c) ? c.subcommands.map((s) => [`${c.name} ${s.name}`, s]) : [[c.name, c]],
  );
}

const config = (options: Iterable<OptionSpec>): ParseArgsConfig["options"] =>
  Object.fromEntries(
    [...options].map((o) => [
      o.name,
      { type: o.arg ? "string" : "boolean", multiple: true, ...(o.name === "help" ? { short: "h" } : {}) },
    ]),
  );

/**
 * The command and subcommand the words name: [command] or [group, subcommand]; the rest are its
 * arguments. With `partial`, a group without its subcommand is a path too (for its help).
 */
export function resolvePath(
  commands: readonly CommandSpec[],
  words: readonly string[],
  partial = false,
): { path: CommandSpec[]; rest: string[] } {
  const [name, sub, ...more] = words;
  if (name === undefined) {
    if (partial) return { path: [], rest: [] };
    throw usage("no command given", "deploy-agent help lists the commands");
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    const names = commands.map((c) => c.name);
    throw usage(
      `unknown command ${quote(name)}`,
      `${didYouMean(name, names)}deploy-agent help lists the commands`,
    );
  }
  if (!isGroup(cmd)) return { path: [cmd], rest: words.slice(1) };
  const subs = cmd.subcommands.map((s) => s.name);
  if (sub === undefined) {
    if (partial) return { path: [cmd], rest: [] };
    throw usage(`${name} needs a subcommand: ${subs.join(", ")}`, `deploy-agent help ${name}`);
  }
  const leaf = cmd.subcommands.find((s) => s.name === sub);
  if (!leaf)
    throw usage(
      `unknown subcommand ${quote(sub)} of ${name}`,
      `${didYouMean(sub, subs)}deploy-agent help ${name} lists them: ${subs.join(", ")}`,
    );
  return { path: [cmd, leaf], rest: more };
}

export const pathName = (path: readonly CommandSpec[]) => path.map((c) => c.name).join(" ");

export function parseCommandLine(
  commands: readonly CommandSpec[],
  argv: string[],
  out: Out,
  err: Out,
): Parsed {
  const known = allOptions(commands);
  // First pass: every declared option, so that option values are never taken for the command's name.
  const { tokens } = parseArgs({
    args: argv,
    options: { ...config([...known.values(), HELP]), version: { type: "boolean", short: "V" } },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const options = tokens.flatMap((t) => (t.kind === "option" ? [t] : []));
  const words = tokens.flatMap((t) => (t.kind === "positional" ? [t.value] : []));
  if (options.some((t) => t.name === "version")) {
    if (argv.length > 1) throw usage("--version takes no other arguments", "deploy-agent --version");
    return { kind: "version" };
  }
  const help = options.some((t) => t.name === "help");
  const { path, rest } = resolvePath(commands, words, help);
  const leaf = path.at(-1);
  if (help || !leaf || isGroup(leaf)) return { kind: "help", path };
  const where = pathName(path);
  const own = leaf.options.map((o) => o.name);
  const listed = `deploy-agent help ${where} lists its options`;
  for (const t of options) {
    if (own.includes(t.name)) continue;
    if (!known.has(t.name))
      throw usage(`Unknown option '${t.rawName}'`, `${didYouMean(t.name, own, "--")}${listed}`);
    const owners = named(commands).filter(([, l]) => l.options.some((o) => o.name === t.name));
    const near = didYouMean(t.name, own, "--");
    throw usage(
      `${t.rawName} is not an option of ${where}`,
      near ? `${near}${listed}` : `it is an option of ${owners.map(([n]) => n).join(", ")}; ${listed}`,
    );
  }
  let values: Record<string, (string | boolean)[] | undefined>;
  try {
    values = parseArgs({ args: argv, options: config(leaf.options), strict: true, allowPositionals: true })
      .values as typeof values;
  } catch (e) {
    throw usage((e as Error).message, listed);
  }
  for (const o of leaf.options) check(o, values[o.name], where);
  const required = leaf.args.filter((a) => !a.optional).length;
  if (rest.length < required)
    throw usage(`${where} needs ${leaf.args[rest.length]?.name}`, `usage: ${usageLine(path)}`);
  if (rest.length > leaf.args.length)
    throw usage(`unexpected argument ${quote(rest[leaf.args.length] ?? "")}`, `usage: ${usageLine(path)}`);
  leaf.args.forEach((a, i) => {
    const value = rest[i];
    if (value === "")
      throw usage(`${where} takes ${a.name}, not an empty value`, `usage: ${usageLine(path)}`);
    if (value !== undefined && a.choices && !a.choices.includes(value))
      throw usage(
        `${where} takes ${a.name} ${a.choices.join("|")}, not ${quote(value)}`,
        `${didYouMean(value, a.choices)}usage: ${usageLine(path)}`,
      );
  });
  const given = (name: string) => values[name] ?? [];
  const call: Call = {
    string: (name) => given(name).at(-1) as string | undefined,
    flag: (name) => given(name).length > 0,
    list: (name) => given(name) as string[],
    args: rest,
    out,
    err,
  };
  return { kind: "run", path, leaf, call };
}

function check(o: OptionSpec, given: (string | boolean)[] | undefined, where: string): void {
  if (!given) return;
  if (given.length > 1 && !o.repeat)
    throw usage(`--${o.name} given ${given.length} times`, `give it once: ${where} takes one --${o.name}`);
  for (const value of given) {
    if (typeof value !== "string") continue;
    const wrong = o.choices
      ? o.choices.includes(value)
        ? undefined
        : `--${o.name} takes ${o.choices.join("|")}, not ${quote(value)}`
      : o.check
        ? o.check(value)
        : value === ""
          ? `--${o.name} takes ${o.arg}, not an empty value`
          : undefined;
    if (wrong) throw usage(wrong, `deploy-agent help ${where} says what --${o.name} takes`);
  }
}
