/**
 * What a command declares, once: its name, summary, arguments, options, examples and how it runs. The
 * parser, the usage text, per-command help and shell completion are all read from these declarations.
 */

export type Out = (text: string) => void;

/** An option of a command. The same name means the same option (and type) in every command. */
export interface OptionSpec<N extends string = string> {
  /** The long name, without the dashes. */
  name: N;
  /** The value's name in help (FILE, N); absent for a flag. */
  arg?: string;
  /** May be given more than once (each value kept); any other option given twice is a usage error. */
  repeat?: boolean;
  /** The only values it takes (checked, and offered by completion). */
  choices?: readonly string[];
  /** Completion offers file names for its value. */
  path?: boolean;
  /** What is wrong with a value, if anything; without it an empty value is refused. */
  check?: (value: string) => string | undefined;
  help: string;
}

export interface ArgSpec {
  name: string;
  optional?: boolean;
  /** The only values it takes (checked, and offered by completion). */
  choices?: readonly string[];
  help: string;
}

/** One invocation of a command, its values checked against its declaration. */
export interface Call<N extends string = string> {
  string(name: N): string | undefined;
  flag(name: N): boolean;
  list(name: N): string[];
  /** The positional arguments, as many as declared. */
  args: string[];
  out: Out;
  err: Out;
}

interface Described {
  name: string;
  /** One line for the overview. */
  summary: string;
  /** What the command does, in more words, for its own help (the summary when absent). */
  about?: string;
  /** At least one, as the operator would type it. */
  examples: readonly [string, ...string[]];
  /** Said after the options: exit codes, where the output goes. */
  notes?: string;
}

export interface Leaf extends Described {
  args: readonly ArgSpec[];
  options: readonly OptionSpec[];
  /** Imports the command's module on first use: the daemon never loads install, fleet or diff. */
  run(call: Call): Promise<number>;
}

export interface Group extends Described {
  subcommands: readonly Leaf[];
}

export type CommandSpec = Leaf | Group;

export const isGroup = (c: CommandSpec): c is Group => "subcommands" in c;

/** Declares a command whose `run` may only ask for the options it declares (checked by tsc). */
export function command<const O extends readonly OptionSpec[]>(
  spec: Described & {
    args?: readonly ArgSpec[];
    options: O;
    run(call: Call<O[number]["name"]>): Promise<number>;
  },
): Leaf {
  return { args: [], ...spec } as Leaf;
}

export function group(spec: Described & { subcommands: readonly Leaf[] }): Group {
  return spec;
}
