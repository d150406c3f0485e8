import { readFile } from "node:fs/promises";
import { parse } from "dotenv";
import { AgentError } from "../core/errors.js";
import { registerSecret, SECRET_NAME } from "../core/redact.js";

/** Reads a dotenv file; a named file that cannot be read is an error, not an empty environment. */
export async function readEnvFile(file: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new AgentError(
      "ENV_MISSING",
      `cannot read env file ${file}: ${(err as NodeJS.ErrnoException).code}`,
      {
        hint: "create it (mode 0600) or pass --env-file FILE",
        cause: err,
      },
    );
  }
  const values = parse(text);
  for (const [name, value] of Object.entries(values)) if (SECRET_NAME.test(name)) registerSecret(value);
  // systemd reads a value on past a line ending in `\` (or an unclosed quote): those lines are the secret too.
  const lf = text.replace(/\r\n?/g, "\n");
  for (const d of envDefinitions(lf)) {
    if (!d.continued || !SECRET_NAME.test(d.name)) continue;
    const raw = lf.slice(d.valueStart, d.end);
    registerSecret(raw);
    registerSecret(raw.replace(/\\\n/g, "").trim());
    for (const line of raw.split("\n")) registerSecret(line.replace(/\\$/, "").trim());
  }
  return values;
}

/**
 * One definition as dotenv 18 reads it (its LINE expression, with groups around what precedes the name,
 * the separator, the value and what follows): a quoted value may span lines.
 */
export const DOTENV_DEFINITION =
  /^(\s*(?:export\s+)?)([\w.-]+)(\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?(\s*(?:#.*)?)$/gm;

/** A definition of an env file (LF line ends) and how far its value reaches. */
export interface EnvDefinition {
  lead: string;
  name: string;
  /** Offsets: where the definition starts, where its value starts. */
  start: number;
  valueStart: number;
  /**
   * Where the value ends for either reader (before the line break that ends it): dotenv's end, or further
   * where systemd's EnvironmentFile= reads on, which is past a line ending in an odd number of backslashes
   * (systemd.exec(5): such a line is joined with the next, whatever the next holds) and, for a value opening
   * a quote dotenv did not see closed, to the end of the file.
   */
  end: number;
  /** `end` lies past dotenv's end of the value. */
  continued: boolean;
}

const joinsNext = (line: string) => /(?:^|[^\\])(?:\\\\)*\\$/.test(line);

/**
 * Every definition dotenv sees, in order, each with the reach of its value (see EnvDefinition). Reaches may
 * overlap a later definition: dotenv reads that one too, systemd reads it as part of this value.
 */
export function envDefinitions(text: string): EnvDefinition[] {
  const out: EnvDefinition[] = [];
  const re = new RegExp(DOTENV_DEFINITION.source, "gm");
  const lineEnd = (from: number) => {
    const nl = text.indexOf("\n", from);
    return nl === -1 ? text.length : nl;
  };
  // Where the lines systemd joins, from the line ending at `end`, end: each line walked once, whatever
  // the number of definitions (dotenv sees one on every joined line) reaching over it.
  const reach = new Map<number, number>();
  const joined = (end: number) => {
    const walked: number[] = [];
    let last = end;
    while (
      !reach.has(last) &&
      last < text.length &&
      joinsNext(text.slice(text.lastIndexOf("\n", last - 1) + 1, last))
    ) {
      walked.push(last);
      last = lineEnd(last + 1);
    }
    const final = reach.get(last) ?? last;
    for (const at of walked) reach.set(at, final);
    return final;
  };
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const [whole, lead = "", name = "", sep = "", value = "", tail = ""] = m;
    const valueStart = m.index + lead.length + name.length + sep.length;
    let end = lineEnd(m.index + whole.length - tail.length);
    const dotenvEnd = end;
    // A quote dotenv did not see closed (its value is then the unquoted rest of the line): systemd reads on.
    const quoted = value.trimStart();
    const q = quoted[0];
    if ((q === "'" || q === '"') && !quoted.slice(1).includes(q)) end = text.length;
    end = joined(end);
    out.push({ lead, name, start: m.index, valueStart, end, continued: end > dotenvEnd });
    // The next search starts on the line after this value as dotenv reads it (dotenv reads on from there).
    re.lastIndex = Math.max(re.lastIndex, m.index + 1);
  }
  return out;
}

/** The variables `${VAR}` may reference: the env file's, overridden by the process environment. */
export function mergeEnv(
  fromFile: Record<string, string>,
  processEnv: NodeJS.ProcessEnv,
): Record<string, string> {
  const merged: Record<string, string> = { ...fromFile };
  for (const [k, v] of Object.entries(processEnv)) if (v !== undefined) merged[k] = v;
  return merged;
}

/**
 * Why no env line can carry `value` so that dotenv (the agent's reader, src/host/env.ts) and systemd's
 * EnvironmentFile= parser both read it back as exactly `value`, or null when one can. Unquoted, dotenv cuts a
 * value at `#` and both trim spaces; inside single quotes both take every character literally, inside double
 * quotes both take every character but `\` and `"` literally. What neither quoting carries: a line break or
 * another control character, both quote kinds, a quote with a backslash, a trailing backslash (dotenv reads
 * `\'` as an escaped quote, so it would take the closing quote with it), invalid Unicode. The one home of
 * this rule: the host (envLine) and `secret set` (before anything is written) ask it. Never says the value.
 */
export function envValueProblem(value: string): string | null {
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value))
    return "its value is not valid Unicode";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\u0000-\u001f\u007f]/.test(value)) return "its value holds a line break or a control character";
  if (quoting(value) === null)
    return "its value holds both a quote and a backslash, both kinds of quotes, or ends in a backslash";
  return null;
}

/** The quote that carries `value` whole (see envValueProblem), or null when none does. */
function quoting(value: string): "'" | '"' | null {
  if (!value.includes("'") && !value.endsWith("\\")) return "'";
  if (!/["\\]/.test(value)) return '"';
  return null;
}

/** One `NAME=value` line that reads back as exactly `value` (see envValueProblem); the error never shows it. */
export function envLine(name: string, value: string): string {
  const refuse = (why: string) =>
    new AgentError("ENV_VALUE_UNSAFE", `${name} cannot be written to an env file: ${why}`, {
      hint: `choose a value without it (e.g. openssl rand -hex 32) and set ${name} in the file by hand`,
    });
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw refuse("not a variable name");
  const problem = envValueProblem(value);
  const quote = quoting(value);
  if (problem || !quote) throw refuse(problem ?? "no quoting carries it");
  return `${name}=${quote}${value}${quote}`;
}

/**
 * An env file's text with `name=value` added at its end, checked by reading it back with dotenv: the new
 * variable has exactly `value` and every variable the file had keeps its value.
 */
export function appendEnv(text: string, name: string, value: string): string {
  const next = `${text}${text && !text.endsWith("\n") ? "\n" : ""}${envLine(name, value)}\n`;
  const before = parse(text);
  const after = parse(next);
  const changed = Object.keys(before).filter((k) => k !== name && after[k] !== before[k]);
  if (after[name] !== value || changed.length) {
    throw new AgentError(
      "ENV_VALUE_UNSAFE",
      `adding ${name} would not read back as written (the file's lines before it: an unclosed quote?)`,
      { hint: `look at the env file, or set ${name} in it by hand` },
    );
  }
  return next;
}

/** Lines that define `name` (dotenv's `NAME=`, `export NAME=`, `NAME: value`). */
const defines = (name: string) => new RegExp(`^\\s*(?:export\\s+)?${name}\\s*(?:=|:\\s)`);

/**
 * An env file's text with `name` set to `value`: its last definition replaced in place (earlier ones
 * removed), or the line added at the end. Checked by reading it back with dotenv: `name` has exactly
 * `value`, and every other variable is there with its value and no variable appeared.
 */
export function setEnv(text: string, name: string, value: string): string {
  const line = envLine(name, value);
  const lines = text.split("\n");
  const at = lines.map((l, i) => (defines(name).test(l) ? i : -1)).filter((i) => i >= 0);
  const last = at.at(-1);
  if (last === undefined) return appendEnv(text, name, value);
  const next = lines
    .map((l, i) => (i === last ? line : l))
    .filter((_, i) => i === last || !at.includes(i))
    .join("\n");
  const before = parse(text);
  const after = parse(next);
  const others = (o: Record<string, string>) => JSON.stringify(Object.entries(o).filter(([k]) => k !== name));
  if (after[name] !== value || others(before) !== others(after)) {
    throw new AgentError(
      "ENV_VALUE_UNSAFE",
      `setting ${name} would not read back as written (a multi-line or unclosed quoted value near it?)`,
      { hint: `look at the env file, or set ${name} in it by hand` },
    );
  }
  return next;
}

/**
 * An env file with every value hidden, as a diff may show it: each definition's whole reach (see
 * EnvironmentFile= and dotenv in envDefinitions: a quoted value's further lines, the lines systemd joins
 * after a line ending in `\`) as `NAME=<redacted>`, and any other line that looks like one too.
 */
export function hideEnvValues(data: string): string {
  const text = data.replace(/\r\n?/g, "\n");
  let out = "";
  let at = 0;
  for (const d of envDefinitions(text)) {
    if (d.start < at) continue;
    out += `${text.slice(at, d.start)}${d.lead}${d.name}=<redacted>`;
    at = d.end;
  }
  return (out + text.slice(at)).replace(/^(\s*[A-Za-z_][A-Za-z0-9_]*\s*=).*$/gm, "$1<redacted>");
}
