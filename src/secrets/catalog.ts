import { createHash } from "node:crypto";
import { parseDocument } from "yaml";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { RECIPIENT } from "./age.js";

/**
 * The repository's list of who may read which secret: `secrets/secrets.yaml`, beside one armored
 * `secrets/<name>.age` per secret. `operators` are recovery recipients every secret is encrypted to;
 * `hosts` maps a host name to its recipient (printed by install and status); each secret names its hosts,
 * and records the recipients its file is encrypted to (written by `secret set` and `secret rekey`) and when
 * its value was last set. Strict: a typo must not silently leave a host out.
 */

export const SECRETS_DIR = "secrets";
export const CATALOG_FILE = `${SECRETS_DIR}/secrets.yaml`;
export const secretFile = (name: string) => `${SECRETS_DIR}/${name}.age`;

/** The largest secret value; a ciphertext file may be this plus the armor and header (see MAX_CIPHERTEXT_BYTES). */
export const MAX_SECRET_BYTES = 64 * 1024;
/** Armor adds a third, the header about 100 bytes per recipient: generous, still bounded. */
export const MAX_CIPHERTEXT_BYTES = 2 * MAX_SECRET_BYTES + 64 * 1024;

export const secretName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { message: "must be lowercase letters, digits and dashes" });
const hostName = z.string().regex(/^[a-z0-9][a-z0-9-]*$/, { message: "must be a host name such as lxc151" });
const recipient = z.string().regex(RECIPIENT, { message: "must be an X25519 age recipient (age1…)" });

const entrySchema = z.strictObject({
  hosts: z.array(hostName),
  recipients: z.array(recipient).default([]),
  updated: z.string().optional(),
});

export const catalogSchema = z.strictObject({
  version: z.literal(1),
  operators: z.array(recipient).min(1, { message: "needs at least one operator recovery recipient" }),
  hosts: z.record(hostName, recipient).default({}),
  secrets: z.record(secretName, entrySchema).default({}),
});

export type Catalog = z.infer<typeof catalogSchema>;
export type CatalogEntry = z.infer<typeof entrySchema>;

export function parseCatalog(text: string, where = CATALOG_FILE): Catalog {
  const doc = parseDocument(text, { uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    throw new AgentError("SOURCE_INVALID", `${where}: ${first.message.split("\n")[0]}`, {
      hint: "fix the YAML and push again",
    });
  }
  const parsed = catalogSchema.safeParse(doc.toJS({ maxAliasCount: 10 }));
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `${where}: ${i.path.join(".") || "(top level)"}: ${i.message}`,
    );
    throw new AgentError("SOURCE_INVALID", lines.join("\n"), { hint: "fix the file and push again" });
  }
  for (const [name, entry] of Object.entries(parsed.data.secrets)) {
    const unknown = entry.hosts.filter((h) => !(h in parsed.data.hosts));
    if (unknown.length) {
      throw new AgentError(
        "SOURCE_INVALID",
        `${where}: secrets.${name}.hosts names ${unknown.join(", ")}, not in hosts`,
        { hint: "add the host's recipient under hosts (deploy-agent status on the host prints it)" },
      );
    }
  }
  return parsed.data;
}

/** The recipients a secret must be encrypted to: its hosts' and the operators', each once, sorted. */
export function wantedRecipients(catalog: Catalog, hosts: readonly string[]): string[] {
  const keys = [...hosts.map((h) => catalog.hosts[h] ?? ""), ...catalog.operators].filter(Boolean);
  return [...new Set(keys)].sort();
}

/** Host names whose recipient is the given one. */
export function hostsWith(catalog: Catalog, key: string): string[] {
  return Object.entries(catalog.hosts)
    .filter(([, r]) => r === key)
    .map(([h]) => h);
}

/**
 * What may be shown of a secret value: `sha256:` and 12 hex digits. Diffs, drift, dry runs, history and
 * notices compare and print this, never the value.
 */
export function fingerprint(value: string | Buffer): string {
  return `sha256:${createHash("sha256").update(value).digest("hex").slice(0, 12)}`;
}

/** The catalog's text with one secret's entry set, comments and the rest as written. */
export function setCatalogEntry(text: string, name: string, entry: CatalogEntry): string {
  const doc = parseDocument(text);
  doc.setIn(["secrets", name], doc.createNode(entry));
  return doc.toString({ lineWidth: 0 });
}
