/** One directive nginx would run: its name and arguments, as nginx sees them after unquoting. */
export interface NginxDirective {
  name: string;
  args: string[];
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
  let start = 0;
  let lastSpace = true;
  let comment = false;
  let escaped = false;
  let variable = false;
  let quote: '"' | "'" | null = null;
  let needSpace = false;
  const statement = (end: string) => {
    const [name, ...rest] = args;
    if (end === ";" && name !== undefined) found.push({ name, args: rest });
    args = [];
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
