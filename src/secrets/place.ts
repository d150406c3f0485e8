import { parse } from "dotenv";
import { isNode, isScalar, parseDocument } from "yaml";
import { AgentError } from "../core/errors.js";
import { SECRET_NAME } from "../core/redact.js";
import { envDefinitions, setEnv } from "../host/env.js";
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

/** The content as a diff may show it: the secret's value (or the whole file) as its fingerprint. */
export function shown(p: Placement, data: Buffer | null): Buffer | null {
  if (!data) return null;
  if (p.format === "file") return Buffer.from(`<secret ${fingerprint(data)}>\n`);
  if (p.format === "env") return Buffer.from(shownEnv(p.key, data));
  const text = data.toString("utf8");
  const doc = parseDocument(text);
  const node = doc.errors.length ? undefined : doc.getIn(yamlPath(p.key), true);
  if (doc.errors.length) return Buffer.from("(not valid YAML: not shown)\n");
  if (!node) return data;
  const range = isNode(node) ? node.range : undefined;
  if (!range || !isScalar(node)) return Buffer.from("(not shown)\n");
  return Buffer.from(`${text.slice(0, range[0])}<${fingerprint(String(node.value))}>${text.slice(range[1])}`);
}

/**
 * An env file as a diff may show it. Other secrets share env files (WEBHOOK_SECRET beside MATRIX_TOKEN):
 * `key` and every secret-named variable are shown as their fingerprint, each definition whole as either
 * reader takes it: a quoted value's further lines (dotenv), what follows the value on its line (systemd
 * reads an unquoted `a#b` whole, dotenv as `a`), and every line systemd's EnvironmentFile= joins to it
 * (after a line ending in `\`, or an unclosed quote: to the end of the file). A definition dotenv sees on
 * such a line is hidden with it.
 */
function shownEnv(key: string, data: Buffer): string {
  const values = parse(data);
  const text = data.toString("utf8").replace(/\r\n?/g, "\n");
  let out = "";
  let at = 0;
  for (const d of envDefinitions(text)) {
    if (d.start < at || !(d.name === key || SECRET_NAME.test(d.name))) continue;
    const value = d.continued ? text.slice(d.valueStart, d.end) : (values[d.name] ?? "");
    out += `${text.slice(at, d.start)}${d.lead}${d.name}=<${fingerprint(value)}>`;
    at = d.end;
  }
  return out + text.slice(at);
}
