import { readFile, stat } from "node:fs/promises";
import { AgentError } from "./errors.js";
import type { Manifest } from "./manifest/schema.js";
import { Secret } from "./secret.js";

/**
 * The webhook secret, from the variable the manifest names (env file or environment) or from its secret
 * file. `serve` refuses to start without a usable one and `validate` reports the same problems, so a
 * manifest that validates also starts.
 */

/** Shorter secrets are refused: `openssl rand -hex 32` gives 64 characters. */
export const MIN_SECRET_LENGTH = 16;

export interface SecretSource {
  manifest: Manifest;
  /** The environment the manifest was interpolated with (env file, then process environment). */
  env: Record<string, string>;
  /** The env file the manifest was loaded with, if any (as seen under --root). */
  envFile: string | undefined;
  /** A manifest host path as seen under --root. */
  under(hostPath: string): string;
}

/** Fails when the file can be read by group or others: it holds a secret. */
export async function checkPrivate(file: string, what: string): Promise<void> {
  const st = await stat(file).catch(() => null);
  if (st && (st.mode & 0o077) !== 0) {
    throw new AgentError(
      "CONFIG_INVALID",
      `${what} ${file} is readable by others (mode 0${(st.mode & 0o777).toString(8)})`,
      { hint: `chmod 600 ${file}` },
    );
  }
}

export async function loadWebhookSecret(src: SecretSource): Promise<Secret> {
  const { secretEnv, secretFile } = src.manifest.webhook;
  const where = secretEnv ? `${secretEnv} (env file or environment)` : `${secretFile} (mode 0600)`;
  const hint = `put it in ${where}; it must match the Gitea webhook's secret (openssl rand -hex 32)`;
  let value: string | undefined;
  if (secretEnv) {
    value = src.env[secretEnv];
    if (value !== undefined && src.envFile && process.env[secretEnv] === undefined)
      await checkPrivate(src.envFile, "env file");
  } else {
    const file = src.under(secretFile);
    await checkPrivate(file, "webhook secret file");
    value = await readFile(file, "utf8").catch(() => undefined);
  }
  const secret = value?.trim();
  if (!secret) throw new AgentError("CONFIG_INVALID", "no webhook secret", { hint });
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new AgentError(
      "CONFIG_INVALID",
      `the webhook secret is ${secret.length} characters; at least ${MIN_SECRET_LENGTH} are required`,
      { hint: `use a long random one in ${where} and in Gitea's webhook settings (openssl rand -hex 32)` },
    );
  }
  return new Secret(secret);
}

/** The bearer token for /status and /metrics (webhook.statusAccess.tokenFile): private, and not trivial. */
export async function loadStatusToken(file: string): Promise<Secret> {
  await checkPrivate(file, "status token file");
  const value = (await readFile(file, "utf8").catch(() => "")).trim();
  if (value.length < MIN_SECRET_LENGTH) {
    throw new AgentError(
      "CONFIG_INVALID",
      `${file} must hold a token of at least ${MIN_SECRET_LENGTH} characters`,
      {
        hint: `openssl rand -hex 32 > ${file} && chmod 600 ${file}; give Prometheus the same one`,
      },
    );
  }
  return new Secret(value);
}
