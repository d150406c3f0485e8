/** One directive nginx would run: its name and arguments, as nginx sees them after unquoting. */
export interface NginxDirective {
  name: string;
  args: string[];
  /** Where each argument is in the text, as [start, end): its characters inside any quotes. */
  spans: [number, number][];
}

/**
 * The directives of an nginx configuration ended by `;` (a block's opening line is not one), found as
 * nginx's own reader finds them (ngx_conf_read_token in src/core/ngx_conf_file.c): a word ends at
 * whitespace, `;` or `{`, and a quoted one at its closing quote; `#` starts a comment only where a word
 * could start; a backslash takes the next character into the word; `${` stays in it. Each word is then
 * unescaped as nginx copies it, so `"include"` and `inc\lude` are what nginx sees. Reading stops where nginx
 * would stop with a syntax error. A plan checks a pull request's configuration with `nginx -t`, and some
 * directives would have it read a file of the machine running the plan, or load code (plan-tools.ts).
 */
export function nginxDirectives(text: string): NginxDirective[] {
  const found: NginxDirective[] = [];
  let args: string[] = [];
  let spans: [number, number][] = [];
  let start = 0;
  let lastSpace = true;
  let comment = false;
  let escaped = false;
  let variable = false;
  let quote: '"' | "'" | null = null;
  let needSpace = false;
  const statement = (end: string) => {
    const [name, ...rest] = args;
    if (end === ";" && name !== undefined) found.push({ name, args: rest, spans: spans.slice(1) });
    args = [];
    spans = [];
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === "\n") comment = false;
    if (comment) continue;
    if (escaped) {
      escaped = false;
      continue;
    }
    if (needSpace) {
      needSpace = false;
      lastSpace = true;
      if (SPACE.has(ch)) continue;
      if (ch === ";" || ch === "{") {
        statement(ch);
        continue;
      }
      if (ch !== ")") return found;
    }
    if (lastSpace) {
      start = i;
      if (SPACE.has(ch)) continue;
      if (ch === ";" || ch === "{") {
        if (!args.length) return found;
        statement(ch);
        continue;
      }
      if (ch === "}") {
        if (args.length) return found;
        continue;
      }
      lastSpace = false;
      if (ch === "#") {
        comment = true;
        lastSpace = true;
      } else if (ch === "\\") escaped = true;
      else if (ch === '"' || ch === "'") {
        start = i + 1;
        quote = ch;
      } else if (ch === "$") variable = true;
      continue;
    }
    if (ch === "{" && variable) continue;
    variable = false;
    if (ch === "\\") {
      escaped = true;
      continue;
    }
    if (ch === "$") {
      variable = true;
      continue;
    }
    let ends = false;
    if (quote) {
      if (ch === quote) {
        quote = null;
        needSpace = true;
        ends = true;
      }
    } else if (SPACE.has(ch) || ch === ";" || ch === "{") {
      lastSpace = true;
      ends = true;
    }
    if (!ends) continue;
    args.push(nginxWord(text.slice(start, i)));
    spans.push([start, i]);
    if (!needSpace && (ch === ";" || ch === "{")) statement(ch);
  }
  return found;
}

const SPACE = new Set([" ", "\t", "\r", "\n"]);

/** nginx undoes `\"`, `\'`, `\\`, `\t`, `\r` and `\n` in a word, and keeps any other backslash. */
function nginxWord(raw: string): string {
  const control: Record<string, string> = { t: "\t", r: "\r", n: "\n" };
  let out = "";
  for (let i = 0; i < raw.length; i++) {
    const next = raw[i + 1] ?? "";
    if (raw[i] === "\\" && (next === '"' || next === "'" || next === "\\")) {
      out += next;
      i++;
    } else if (raw[i] === "\\" && control[next]) {
      out += control[next];
      i++;
    } else {
      out += raw[i];
    }
  }
  return out;
}

/** The values of a path-making directive's first argument that name no path (nginx's own tests, exact). */
const NAMES_NO_PATH: Record<string, (arg: string) => boolean> = {
  access_log: (a) => a === "off" || a.startsWith("syslog:"),
  error_log: (a) => a === "stderr" || a.startsWith("syslog:") || a.startsWith("memory:"),
  listen: (a) => !a.startsWith("unix:"),
};
/** Directives whose first argument is a file `nginx -t` opens to append (making it), or a socket it binds. */
const MAKES_FILE = new Set(["access_log", "error_log"]);
const MAKES_SOCKET = new Set(["listen"]);
/** Directives whose first argument is a directory `nginx -t` makes. */
const MAKES_DIR = new Set(
  ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((p) => `${p}_temp_path`)
    .concat(["proxy", "fastcgi", "uwsgi", "scgi"].map((p) => `${p}_cache_path`)),
);

/** A configuration with every path `nginx -t` would make put under its prefix, and those paths. */
export interface ConfinedNginx {
  text: string;
  /** Relative to nginx's prefix (`-p`): log files, directories, unix sockets (relative to its working directory). */
  files: string[];
  dirs: string[];
  sockets: string[];
}

/**
 * Puts each path an nginx configuration has `nginx -t` make (the log files it opens, the temp and cache
 * directories it creates, the unix sockets it binds) in a name of its own relative to the prefix, whatever
 * the configuration named: absolute, relative with `..`, quoted or not. The argument's characters are
 * replaced where nginx's reader finds them (nginxDirectives), by a name with no character nginx reads as
 * special in any quoting; the result is read again and refused (null) unless every such directive now names
 * one of those paths.
 */
export function confineNginxPaths(text: string): ConfinedNginx | null {
  const out: ConfinedNginx = { text, files: [], dirs: [], sockets: [] };
  const edits: { span: [number, number]; to: string }[] = [];
  const found = nginxDirectives(text);
  for (const d of found) {
    const arg = d.args[0];
    const span = d.spans[0];
    if (arg === undefined || span === undefined || NAMES_NO_PATH[d.name]?.(arg)) continue;
    const n = edits.length + 1;
    if (MAKES_FILE.has(d.name)) {
      out.files.push(`logs/${n}.log`);
      edits.push({ span, to: `logs/${n}.log` });
    } else if (MAKES_DIR.has(d.name)) {
      out.dirs.push(`paths/${n}`);
      edits.push({ span, to: `paths/${n}` });
    } else if (MAKES_SOCKET.has(d.name)) {
      out.sockets.push(`sockets/${n}.sock`);
      edits.push({ span, to: `unix:sockets/${n}.sock` });
    }
  }
  for (const { span, to } of edits.reverse())
    out.text = out.text.slice(0, span[0]) + to + out.text.slice(span[1]);
  const again = nginxDirectives(out.text);
  const ours = new Set([...out.files, ...out.dirs, ...out.sockets.map((s) => `unix:${s}`)]);
  const confined = again.every((d) => {
    const arg = d.args[0];
    if (arg === undefined || !(MAKES_FILE.has(d.name) || MAKES_DIR.has(d.name) || MAKES_SOCKET.has(d.name)))
      return true;
    return NAMES_NO_PATH[d.name]?.(arg) || ours.has(arg);
  });
  return confined && again.length === found.length ? out : null;
}
