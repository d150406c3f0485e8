import { AgentError } from "../core/errors.js";
import { registerSecret } from "../core/redact.js";
import type { StepContext } from "../steps/types.js";
import { decrypt } from "./age.js";
import { CATALOG_FILE, hostsWith, MAX_CIPHERTEXT_BYTES, parseCatalog, secretFile } from "./catalog.js";
import { readHostIdentity } from "./identity.js";

/**
 * A secret of the revision being deployed, decrypted in memory with this host's identity. Before anything
 * is decrypted the catalog must list this host's recipient among the secret's, so a secret for another host
 * fails with SECRET_UNREADABLE naming the missing recipient. The value is registered with the redaction
 * point before it is returned: from here on it is `[redacted]` wherever it might surface.
 */
export async function openSecret(ctx: StepContext, name: string, identityFile: string): Promise<string> {
  const catalog = parseCatalog((await ctx.source.read(CATALOG_FILE)).toString("utf8"));
  const entry = catalog.secrets[name];
  if (!entry) {
    throw new AgentError("SOURCE_INVALID", `${CATALOG_FILE} lists no secret "${name}"`, {
      hint: `deploy-agent secret set ${name} --hosts HOST (on the operator's machine), commit and push`,
    });
  }
  const armored = await ctx.source.read(secretFile(name));
  if (armored.length > MAX_CIPHERTEXT_BYTES) {
    throw new AgentError(
      "SOURCE_INVALID",
      `${secretFile(name)} is larger than ${MAX_CIPHERTEXT_BYTES} bytes; refused`,
    );
  }
  const { identity, recipient } = await readHostIdentity(ctx.host, identityFile);
  const named = hostsWith(catalog, recipient);
  const me = named.length ? `${named.join(", ")} (${recipient})` : `this host (${recipient})`;
  if (!entry.recipients.includes(recipient)) {
    const listed = named.some((h) => entry.hosts.includes(h));
    throw new AgentError(
      "SECRET_UNREADABLE",
      `secret ${name} is not encrypted to ${me}: it is for ${entry.hosts.join(", ") || "no host"}${listed ? ", but its file was not re-encrypted since" : ""}`,
      {
        hint: listed
          ? `run deploy-agent secret rekey ${name} on the operator's machine, commit and push`
          : named.length
            ? `add ${named[0]} to secrets.${name}.hosts in ${CATALOG_FILE}, run deploy-agent secret rekey ${name}, commit and push`
            : `add this host's recipient ${recipient} under hosts in ${CATALOG_FILE} and to the secret's hosts, then deploy-agent secret rekey ${name}`,
      },
    );
  }
  const value = await decrypt(armored.toString("utf8"), identity.reveal(), `${secretFile(name)} (for ${me})`);
  registerSecret(value);
  for (const line of value.split("\n")) registerSecret(line.trim());
  return value;
}
