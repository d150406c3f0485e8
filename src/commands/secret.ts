import { readFile } from "node:fs/promises";
import path from "node:path";
import { AgentError, asAgentError } from "../core/errors.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { decrypt, encrypt } from "../secrets/age.js";
import {
  CATALOG_FILE,
  type Catalog,
  fingerprint,
  parseCatalog,
  secretFile,
  secretName,
  setCatalogEntry,
  wantedRecipients,
} from "../secrets/catalog.js";
import { refuseUnplaceable } from "../secrets/env-placements.js";
import { parseIdentityFile } from "../secrets/identity.js";
import { readSecretValue } from "./secret-value.js";

/**
 * `deploy-agent secret set|list|rekey`, on the operator's machine, in a checkout of the config repository:
 * values are encrypted there to the recipients `secrets/secrets.yaml` names, and a rotation is the commit
 * of the new `secrets/<name>.age`. No value is ever printed or written in plain text; `list` shows names,
 * recipients and age, and a value only as its fingerprint when it is set.
 */

export interface SecretFlags {
  repo?: string | undefined;
  json: boolean;
  hosts?: string | undefined;
  identity?: string | undefined;
  raw: boolean;
  /** `set`: write the value in $EDITOR instead of typing or piping it. */
  editor?: boolean;
}

type Out = (text: string) => void;

const repoOf = (flags: SecretFlags) => path.resolve(flags.repo ?? ".");

async function loadCatalog(repo: string): Promise<{ text: string; catalog: Catalog }> {
  const file = path.join(repo, CATALOG_FILE);
  const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new AgentError("CONFIG_INVALID", `cannot read ${file}: ${err.code}`, {
      hint: `run in the config repository (or pass --repo DIR); ${CATALOG_FILE} starts as "version: 1\\noperators: [<your age1… recovery recipient>]\\nhosts: {}"`,
    });
  });
  try {
    return { text, catalog: parseCatalog(text, file) };
  } catch (err) {
    const e = asAgentError(err);
    throw new AgentError("CONFIG_INVALID", e.message, { hint: e.hint });
  }
}

function nameArg(name: string | undefined): string {
  const ok = secretName.safeParse(name);
  if (!ok.success) {
    throw new AgentError(
      "USAGE",
      `secret name ${JSON.stringify(name ?? "")}: lowercase letters, digits and dashes`,
      {
        hint: "deploy-agent secret set NAME --hosts lxc151",
      },
    );
  }
  return ok.data;
}

async function writeSecret(repo: string, name: string, armored: string): Promise<void> {
  await writeFileAtomic(path.join(repo, secretFile(name)), armored, { mode: 0o644 });
}

async function saveCatalog(repo: string, text: string): Promise<void> {
  // Read back through the schema before it replaces the file: a catalog the hosts cannot parse is never written.
  parseCatalog(text);
  await writeFileAtomic(path.join(repo, CATALOG_FILE), text, { mode: 0o644 });
}

export async function secretSetCommand(
  flags: SecretFlags,
  rawName: string | undefined,
  input: NodeJS.ReadStream,
  out: Out,
  err: Out,
): Promise<number> {
  const name = nameArg(rawName);
  const repo = repoOf(flags);
  const { text, catalog } = await loadCatalog(repo);
  const hosts =
    flags.hosts !== undefined
      ? flags.hosts
          .split(",")
          .map((h) => h.trim())
          .filter(Boolean)
      : catalog.secrets[name]?.hosts;
  if (!hosts?.length) {
    throw new AgentError("USAGE", `secret ${name} is new: say which hosts may read it with --hosts`, {
      hint: `hosts in ${CATALOG_FILE}: ${Object.keys(catalog.hosts).join(", ") || "none yet"}`,
    });
  }
  const unknown = hosts.filter((h) => !(h in catalog.hosts));
  if (unknown.length) {
    throw new AgentError(
      "USAGE",
      `${unknown.join(", ")} ${unknown.length === 1 ? "is" : "are"} not in hosts of ${CATALOG_FILE}`,
      {
        hint: "add the host's recipient there (deploy-agent status on the host prints it)",
      },
    );
  }
  const value = await readSecretValue(input, err, { raw: flags.raw, name, editor: flags.editor ?? false });
  // What a host would refuse to write into its env file is refused here, before anything is written.
  await refuseUnplaceable(repo, name, value);
  const recipients = wantedRecipients(catalog, hosts);
  await writeSecret(repo, name, await encrypt(value, recipients));
  await saveCatalog(
    repo,
    setCatalogEntry(text, name, {
      hosts: [...new Set(hosts)],
      recipients,
      updated: new Date().toISOString(),
    }),
  );
  out(
    `secret ${name} (${fingerprint(value)}) encrypted for ${hosts.join(", ")} and ${catalog.operators.length} operator recipient${catalog.operators.length === 1 ? "" : "s"}\n` +
      `commit it: git add ${secretFile(name)} ${CATALOG_FILE} && git commit -m "secret ${name}: rotate"\n`,
  );
  return 0;
}

interface Listed {
  name: string;
  hosts: string[];
  recipients: number;
  updated: string | null;
  /** ok; rekey: the file's recipients are not the ones the catalog wants; missing: no file. */
  state: "ok" | "rekey" | "missing";
}

async function listed(repo: string, catalog: Catalog): Promise<Listed[]> {
  return Promise.all(
    Object.entries(catalog.secrets).map(async ([name, e]) => {
      const exists = await readFile(path.join(repo, secretFile(name))).then(
        () => true,
        () => false,
      );
      const same =
        JSON.stringify([...e.recipients].sort()) === JSON.stringify(wantedRecipients(catalog, e.hosts));
      return {
        name,
        hosts: e.hosts,
        recipients: e.recipients.length,
        updated: e.updated ?? null,
        state: !exists ? "missing" : same ? "ok" : "rekey",
      } satisfies Listed;
    }),
  );
}

function age(at: string | null, now: number): string {
  if (!at || Number.isNaN(Date.parse(at))) return "unknown age";
  const days = Math.floor((now - Date.parse(at)) / 86_400_000);
  return days < 1 ? "set today" : `set ${days}d ago`;
}

export async function secretListCommand(flags: SecretFlags, out: Out): Promise<number> {
  const repo = repoOf(flags);
  const { catalog } = await loadCatalog(repo);
  const rows = await listed(repo, catalog);
  if (flags.json) {
    out(
      `${JSON.stringify({ schema: "deploy-agent/secrets@1", operators: catalog.operators.length, hosts: catalog.hosts, secrets: rows }, null, 2)}\n`,
    );
  } else {
    const now = Date.now();
    const lines = rows.map(
      (r) =>
        `${r.name}: ${r.hosts.join(", ")} (+ ${catalog.operators.length} operator), ${r.recipients} recipients, ${age(r.updated, now)}${r.state === "ok" ? "" : r.state === "rekey" ? "; NEEDS REKEY (deploy-agent secret rekey)" : `; ${secretFile(r.name)} MISSING`}`,
    );
    out(`${lines.length ? lines.join("\n") : `no secrets in ${CATALOG_FILE}`}\n`);
  }
  return rows.some((r) => r.state !== "ok") ? 1 : 0;
}

/**
 * `secret rekey [NAME]`: every secret whose file is not encrypted to exactly the recipients the catalog
 * wants (a host added, replaced or removed), or the one named, decrypted with the operator's recovery
 * identity and encrypted again. The value and its `updated` date stay.
 */
export async function secretRekeyCommand(
  flags: SecretFlags,
  rawName: string | undefined,
  out: Out,
): Promise<number> {
  const repo = repoOf(flags);
  const { text, catalog } = await loadCatalog(repo);
  const only = rawName === undefined ? undefined : nameArg(rawName);
  if (only && !catalog.secrets[only])
    throw new AgentError("USAGE", `${CATALOG_FILE} lists no secret "${only}"`);
  const keyFile = flags.identity ?? process.env.DEPLOY_AGENT_AGE_IDENTITY;
  if (!keyFile) {
    throw new AgentError("USAGE", "secret rekey needs the operator's identity to decrypt with", {
      hint: "pass --identity FILE (or set DEPLOY_AGENT_AGE_IDENTITY): the key of an operators recipient",
    });
  }
  const { identity } = parseIdentityFile(await readFile(keyFile, "utf8").catch(() => ""));
  if (!identity) throw new AgentError("USAGE", `${keyFile} holds no AGE-SECRET-KEY-1 line`);
  let next = text;
  const done: string[] = [];
  for (const row of await listed(repo, catalog)) {
    if (only ? row.name !== only : row.state !== "rekey") continue;
    if (row.state === "missing")
      throw new AgentError("CONFIG_INVALID", `${secretFile(row.name)} does not exist; set it first`);
    const entry = catalog.secrets[row.name];
    if (!entry) continue;
    const armored = await readFile(path.join(repo, secretFile(row.name)), "utf8");
    const value = await decrypt(armored, identity, secretFile(row.name)).catch((e: unknown) => {
      throw new AgentError("SECRET_UNREADABLE", `${asAgentError(e).message}`, {
        hint: `the identity must be one of the operators recipients; a secret nobody can read must be set again: deploy-agent secret set ${row.name}`,
      });
    });
    const recipients = wantedRecipients(catalog, entry.hosts);
    await writeSecret(repo, row.name, await encrypt(value, recipients));
    next = setCatalogEntry(next, row.name, { ...entry, recipients });
    await saveCatalog(repo, next);
    done.push(row.name);
  }
  out(
    done.length
      ? `re-encrypted ${done.join(", ")}; commit ${SECRETS_DIR_HINT}\n`
      : "every secret is encrypted to its recipients already\n",
  );
  return 0;
}

const SECRETS_DIR_HINT = "secrets/ and push";
