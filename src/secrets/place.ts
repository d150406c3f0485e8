import { parse } from "dotenv";
import { isNode, isScalar, parseDocument } from "yaml";
import { AgentError } from "../core/errors.js";
import { SECRET_NAME } from "../core/redact.js";
import { setEnv } from "../host/env.js";
import { fingerprint } from "./catalog.js";

/**
 * Where a secret value goes in its target: the whole file, one `KEY=value` line of an env file (quoted so
 * dotenv and systemd read it back identically), or one YAML node (Draupnir's `accessToken`). Each format
 * reads the value that is live, places the new one, and renders content for diffs with every value as its
 * fingerprint.
 */
export type Placement = { format: "file" } | { format: "env"; key: string } | { format: "yaml"; key: string };

const yamlPath = (key: string) => key.split(".");

const refuse = (target: string, why: string) =>
  new AgentError("TARGET_WRITE_FAILED", `${target}: ${why}; it was left as it is`, {
    hint: "fix the file on the host, then re-run the step",
  });

/** The value live in the target's content; undefined when there is none. */
export function liveValue(p: Placement, data: Buffer | null): string | undefined {
  if (!data) return undefined;
  if (p.format === "file") return data.toString("utf8");
  if (p.format === "env") return parse(data)[p.key];
  const doc = parseDocument(data.toString("utf8"));
  if (doc.errors.length) return undefined;
  const v = doc.getIn(yamlPath(p.key));
  return typeof v === "string" ? v : undefined;
}

/** The target's new content: what is live with the value placed, everything else as it was. */
export function place(p: Placement, target: string, data: Buffer | null, value: string): Buffer {
  if (p.format === "file") return Buffer.from(value);
  if (p.format === "env") return Buffer.from(setEnv(data?.toString("utf8") ?? "", p.key, value));
  if (!data) throw refuse(target, `does not exist, so there is no YAML to set ${p.key} in`);
  const doc = parseDocument(data.toString("utf8"));
  if (doc.errors.length) throw refuse(target, "is not valid YAML");
  doc.setIn(yamlPath(p.key), value);
  const text = doc.toString({ lineWidth: 0 });
  if (parseDocument(text).getIn(yamlPath(p.key)) !== value) {
    throw refuse(target, `${p.key} would not read back as written`);
  }
  return Buffer.from(text);
}

/**
 * One definition as dotenv 18 reads it (its LINE expression, with groups around what precedes the name,
 * the separator, the value and what follows): a quoted value may span lines.
 */
const DOTENV_DEFINITION =
  /^(\s*(?:export\s+)?)([\w.-]+)(\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?(\s*(?:#.*)?)$/gm;

/** The content as a diff may show it: the secret's value (or the whole file) as its fingerprint. */
export function shown(p: Placement, data: Buffer | null): Buffer | null {
  if (!data) return null;
  if (p.format === "file") return Buffer.from(`<secret ${fingerprint(data)}>\n`);
  if (p.format === "env") {
    // Other secrets share env files (WEBHOOK_SECRET beside MATRIX_TOKEN): every secret-named variable too,
    // each definition whole as dotenv reads it, so a quoted value's further lines are hidden with it, and
    // what follows it on its line too (systemd reads an unquoted `a#b` whole, dotenv as `a`).
    const values = parse(data);
    const text = data.toString("utf8").replace(/\r\n?/g, "\n");
    return Buffer.from(
      text.replace(DOTENV_DEFINITION, (whole, lead: string, name: string, _sep, _value, tail: string) =>
        name === p.key || SECRET_NAME.test(name)
          ? `${lead}${name}=<${fingerprint(values[name] ?? "")}>${tail.slice(tail.search(/\n|$/))}`
          : whole,
      ),
    );
  }
  const text = data.toString("utf8");
  const doc = parseDocument(text);
  const node = doc.errors.length ? undefined : doc.getIn(yamlPath(p.key), true);
  if (doc.errors.length) return Buffer.from("(not valid YAML: not shown)\n");
  if (!node) return data;
  const range = isNode(node) ? node.range : undefined;
  if (!range || !isScalar(node)) return Buffer.from("(not shown)\n");
  return Buffer.from(`${text.slice(0, range[0])}<${fingerprint(String(node.value))}>${text.slice(range[1])}`);
}
