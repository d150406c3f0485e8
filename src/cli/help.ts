import { type CommandSpec, isGroup, type Leaf, type OptionSpec } from "./spec.js";

/** The overview and each command's help, written from the declarations. */

const WIDTH = 100;
const COLUMN = 24;

/** Words wrapped to `width`, each line after the first indented by `indent`. */
function wrap(text: string, width: number, indent: number): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.join(`\n${" ".repeat(indent)}`);
}

/** Two columns: the right one wrapped, or starting below a left one too wide for its column. */
function table(rows: readonly (readonly [string, string])[]): string {
  return rows
    .map(([left, right]) => {
      const text = wrap(right, WIDTH - COLUMN, COLUMN);
      return left.length < COLUMN - 3
        ? `  ${left.padEnd(COLUMN - 2)}${text}`
        : `  ${left}\n${" ".repeat(COLUMN)}${text}`;
    })
    .join("\n");
}

const argWords = (leaf: Leaf) => leaf.args.map((a) => (a.optional ? `[${a.name}]` : a.name));

/** `deploy-agent pin REV [options]`, `deploy-agent fleet <subcommand> [options]`. */
export function usageLine(path: readonly CommandSpec[]): string {
  const last = path.at(-1);
  const words = ["deploy-agent", ...path.map((c) => c.name)];
  if (!last) words.push("<command>");
  else if (isGroup(last)) words.push("<subcommand>");
  else words.push(...argWords(last));
  return [...words, "[options]"].join(" ");
}

const optionLabel = (o: OptionSpec) =>
  `${o.name === "help" ? "-h, " : ""}--${o.name}${o.arg ? ` ${o.arg}` : ""}`;
const optionText = (o: OptionSpec) => (o.choices ? `${o.help}: ${o.choices.join(", ")}` : o.help);

export function overview(commands: readonly CommandSpec[]): string {
  const rows = commands.flatMap((c): [string, string][] =>
    isGroup(c)
      ? c.subcommands.map((s) => [[c.name, s.name, ...argWords(s)].join(" "), s.summary])
      : [[[c.name, ...argWords(c)].join(" "), c.summary]],
  );
  return `usage: ${usageLine([])}

commands:
${table(rows)}

options:
${table([
  ["-h, --help", "this text; after a command, that command's options and an example"],
  ["-V, --version", "print the version"],
])}

deploy-agent help COMMAND [SUBCOMMAND] shows a command's options and an example.
exit codes: 0 success, 1 a step or the run failed, 2 usage or configuration error
`;
}

/** One command's (or subcommand's) usage, options with what they mean, and examples. */
export function commandHelp(path: readonly CommandSpec[]): string {
  const cmd = path.at(-1);
  if (!cmd) throw new Error("commandHelp needs a command");
  const name = path.map((c) => c.name).join(" ");
  const parts = [`usage: ${usageLine(path)}`, wrap(cmd.about ?? cmd.summary, WIDTH, 0)];
  if (isGroup(cmd)) {
    parts.push(
      `subcommands:\n${table(cmd.subcommands.map((s) => [[s.name, ...argWords(s)].join(" "), s.summary]))}`,
    );
  } else {
    if (cmd.args.length) parts.push(`arguments:\n${table(cmd.args.map((a) => [a.name, a.help]))}`);
    const options = [...cmd.options, { name: "help", help: "this text" }];
    parts.push(`options:\n${table(options.map((o) => [optionLabel(o), optionText(o)]))}`);
  }
  parts.push(
    `${cmd.examples.length > 1 ? "examples" : "example"}:\n${cmd.examples.map((e) => `  ${e}`).join("\n")}`,
  );
  if (cmd.notes) parts.push(wrap(cmd.notes, WIDTH, 0));
  if (isGroup(cmd))
    parts.push(`deploy-agent help ${name} SUBCOMMAND shows a subcommand's options and an example.`);
  return `${parts.join("\n\n")}\n`;
}
