import { stat } from "node:fs/promises";
import { AgentError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { readBounded } from "../host/bounded-read.js";
import type { Manifest } from "../manifest/schema.js";

/**
 * The webhook secret, from the variable the manifest names (env file or environment) or from its secret
 * file. `serve` refuses to start without a usable one and `validate` reports the same problems, so a
 * manifest that validates also starts.
 */

/** Shorter secrets are refused: `openssl rand -hex 32` gives 64 characters. */
export const MIN_SECRET_LENGTH = 16;
/** Longer secrets are refused: a shared secret is a random string, not a document. */
export const MAX_SECRET_LENGTH = 1024;
/** A secret file larger than this is refused before it is read. */
export const MAX_SECRET_FILE_BYTES = 4096;

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

/**
 * A private file's text, read through one handle (its mode, owner and size are those of what is read), or
 * undefined when there is no such file. Refused when group or others may read it, or when it is larger
 * than MAX_SECRET_FILE_BYTES; with `owned`, also when neither root nor this process's user owns it.
 */
export async function readPrivateFile(
  file: string,
  what: string,
  opts: { owned?: boolean } = {},
): Promise<string | undefined> {
  const hint = "it holds one line: the secret (openssl rand -hex 32)";
  const read = await readBounded(file, {
    follow: true,
    maxBytes: MAX_SECRET_FILE_BYTES,
    check: (st) => {
      if ((st.mode & 0o077) !== 0) {
        throw new AgentError(
          "CONFIG_INVALID",
          `${what} ${file} is readable by others (mode 0${(st.mode & 0o777).toString(8)})`,
          { hint: `chmod 600 ${file}` },
        );
      }
      // Another user's file is theirs to rewrite, whatever its mode says now.
      const uid = process.geteuid?.();
      if (opts.owned && st.uid !== 0 && st.uid !== uid) {
        throw new AgentError(
          "CONFIG_INVALID",
          `${what} ${file} is owned by uid ${st.uid}, not by root or this process's uid ${uid}`,
          { hint: `chown ${uid === undefined || uid === 0 ? "root" : uid} ${file}` },
        );
      }
    },
    fail: (p) => {
      switch (p.is) {
        case "unopenable":
        case "link":
          return new AgentError(
            "CONFIG_INVALID",
            `cannot read ${what} ${file}: ${p.is === "link" ? "ELOOP" : p.code}`,
            {
              hint: `it must be readable by the agent's user (chmod 600 ${file}, owned by that user)`,
            },
          );
        case "not-file":
          return new AgentError("CONFIG_INVALID", `${what} ${file} is not a regular file`, {
            hint,
          });
        case "too-large":
          return new AgentError(
            "CONFIG_INVALID",
            `${what} ${file} is ${p.size} bytes, more than ${MAX_SECRET_FILE_BYTES}`,
            {
              hint,
            },
          );
        case "changed":
          return new AgentError("CONFIG_INVALID", `${what} ${file} changed size while it was read`, {
            hint: "read it again once whatever writes it has finished",
          });
      }
    },
  });
  return read?.data.toString("utf8");
}

/**
 * A webhook secret's value, trimmed and checked against its length bounds; `where` says where it comes from,
 * `label` what it is ("webhook secret", "next webhook secret").
 */
export function checkedSecret(value: string | undefined, where: string, label = "webhook secret"): Secret {
  const secret = value?.trim();
  if (!secret) {
    throw new AgentError("CONFIG_INVALID", `no ${label}`, {
      hint: `put it in ${where}; it must match the Gitea webhook's secret (openssl rand -hex 32)`,
    });
  }
  if (secret.length < MIN_SECRET_LENGTH || secret.length > MAX_SECRET_LENGTH) {
    const bound =
      secret.length < MIN_SECRET_LENGTH
        ? `at least ${MIN_SECRET_LENGTH} are required`
        : `at most ${MAX_SECRET_LENGTH} are allowed`;
    throw new AgentError("CONFIG_INVALID", `the ${label} is ${secret.length} characters; ${bound}`, {
      hint: `use a long random one in ${where} and in Gitea's webhook settings (openssl rand -hex 32)`,
    });
  }
  return new Secret(secret);
}

export async function loadWebhookSecret(src: SecretSource): Promise<Secret> {
  const { secretEnv, secretFile } = src.manifest.webhook;
  if (secretEnv) {
    const value = src.env[secretEnv];
    if (value !== undefined && src.envFile && process.env[secretEnv] === undefined)
      await checkPrivate(src.envFile, "env file");
    return checkedSecret(value, `${secretEnv} (env file or environment)`);
  }
  const file = src.under(secretFile);
  return checkedSecret(await readPrivateFile(file, "webhook secret file"), `${file} (mode 0600)`);
}

/**
 * The next webhook secret (webhook.nextSecretFile) while a rotation is under way, checked as the current
 * one is; undefined when there is no such file.
 */
export async function loadNextWebhookSecret(src: SecretSource): Promise<Secret | undefined> {
  const file = src.under(src.manifest.webhook.nextSecretFile);
  const text = await readPrivateFile(file, "next webhook secret file");
  return text === undefined ? undefined : checkedSecret(text, `${file} (mode 0600)`, "next webhook secret");
}

/**
 * The bearer token for /status and /metrics (webhook.statusAccess.tokenFile): private, the agent's own, and
 * not trivial.
 */
export async function loadStatusToken(file: string): Promise<Secret> {
  const value = ((await readPrivateFile(file, "status token file", { owned: true })) ?? "").trim();
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
