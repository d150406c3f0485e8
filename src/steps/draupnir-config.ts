import { isAlias, isMap, isNode, isScalar, isSeq, parseDocument } from "yaml";
import { z } from "zod";
import { AgentError, asAgentError } from "../core/errors.js";
import { registerSecret } from "../core/redact.js";
import { CATALOG_FILE, secretFile, secretName } from "../secrets/catalog.js";
import { HOST_IDENTITY_FILE } from "../secrets/identity.js";
import { openSecret } from "../secrets/open.js";
import { hostPath, MAX_STEP_TIMEOUT_SECONDS, repoPath, stepCommon } from "./common.js";
import { fileDrift } from "./drift.js";
import type { StepContext, StepKind } from "./types.js";

/**
 * `draupnir-config`: overwrite Draupnir's config from the repository (which carries a placeholder token)
 * while keeping the live `accessToken`, then restart Draupnir and wait for its healthz endpoint. An unhealthy
 * bot gets its previous config back and another restart. The token never reaches logs, diffs or dry-run
 * output: diffs are computed over copies with the token replaced by `<redacted>`. With `tokenSecret` the token
 * comes from that secret of the repository instead (rotation is a commit); the health gate and its rollback
 * are the same, so a token Draupnir cannot start with gives the previous config, and token, back.
 */
/** Time the step keeps, beyond the health wait, for the restart. */
const RESTART_MARGIN_SECONDS = 30;

export const schema = z
  .strictObject({
    ...stepCommon,
    kind: z.literal("draupnir-config"),
    source: repoPath,
    target: hostPath.default("/opt/draupnir/config/production.yaml"),
    placeholder: z.string().min(1).default("REDACTED"),
    service: z.string().min(1).default("draupnir.service"),
    healthUrl: z.url().default("http://127.0.0.1:8081/healthz"),
    healthTimeoutSeconds: z.number().int().min(1).max(900).default(90),
    /**
     * The rollback's own deadline (restore, restart, health wait), which starts when it does: it runs after a
     * step that timed out too, whose signal has fired.
     */
    rollbackTimeoutSeconds: z.number().int().min(1).max(120).default(30),
    /** Keys the merged config must have; a config missing one is never written. */
    requiredKeys: z.array(z.string().min(1)).default(["homeserverUrl", "rawHomeserverUrl", "managementRoom"]),
    /** Take accessToken from this secret (src/steps/secret.ts) instead of keeping the live one. */
    tokenSecret: z
      .strictObject({ name: secretName, identityFile: hostPath.default(HOST_IDENTITY_FILE) })
      .optional(),
  })
  .superRefine((step, ctx) => {
    // The restart and its health wait must fit inside the step's own timeout.
    if (step.healthTimeoutSeconds + RESTART_MARGIN_SECONDS > step.timeoutSeconds) {
      ctx.addIssue({
        code: "custom",
        path: ["timeoutSeconds"],
        message: `must be at least healthTimeoutSeconds + ${RESTART_MARGIN_SECONDS} (${step.healthTimeoutSeconds + RESTART_MARGIN_SECONDS}): the health wait and the restart must fit inside the step's timeout`,
      });
    }
    // A rollback may run past the timeout: the two together stay within what a stopping daemon waits for.
    if (step.timeoutSeconds + step.rollbackTimeoutSeconds > MAX_STEP_TIMEOUT_SECONDS) {
      ctx.addIssue({
        code: "custom",
        path: ["rollbackTimeoutSeconds"],
        message: `timeoutSeconds + rollbackTimeoutSeconds must be at most ${MAX_STEP_TIMEOUT_SECONDS} (a rollback may run after a step that timed out)`,
      });
    }
  });

export type DraupnirConfigStep = z.infer<typeof schema>;

const REDACTED = "<redacted>";

function fail(code: "TOKEN_UNAVAILABLE" | "SOURCE_INVALID", message: string, hint: string): AgentError {
  return new AgentError(code, message, { hint });
}

/** The live token, refusing to go on when there is none worth keeping. */
function liveToken(step: DraupnirConfigStep, live: Buffer | null): string {
  if (!live) {
    throw fail(
      "TOKEN_UNAVAILABLE",
      `${step.target} does not exist, so there is no live access token to keep`,
      "install Draupnir's config with its token by hand once",
    );
  }
  const doc = parseDocument(live.toString("utf8"));
  const token = doc.errors.length ? undefined : doc.get("accessToken");
  if (typeof token !== "string" || token.trim() === "" || token === step.placeholder) {
    throw fail(
      "TOKEN_UNAVAILABLE",
      `${step.target} has no usable accessToken (${doc.errors.length ? "unparsable YAML" : token === step.placeholder ? "it is the placeholder" : "missing or empty"}); refusing to overwrite it`,
      "put the live token back into the file on the host (see README: Token rotation)",
    );
  }
  registerSecret(token); // known to the redaction point from here on, wherever it might surface
  return token;
}

/**
 * The token to write: the secret's, or the live one. With a secret the live token is still registered for
 * redaction (the previous config may surface in a rollback), and a missing or placeholder one is no error.
 */
async function wantedToken(step: DraupnirConfigStep, ctx: StepContext, live: Buffer | null): Promise<string> {
  if (!step.tokenSecret) return liveToken(step, live);
  try {
    liveToken(step, live);
  } catch {
    // nothing usable live: the secret is what Draupnir gets
  }
  return openSecret(ctx, step.tokenSecret.name, step.tokenSecret.identityFile);
}

/** The repository config with the live token set; comments and key order stay as committed. */
function merge(step: DraupnirConfigStep, source: Buffer, token: string): Buffer {
  const doc = parseDocument(source.toString("utf8"));
  const first = doc.errors[0];
  if (first)
    throw fail(
      "SOURCE_INVALID",
      `${step.source} is not valid YAML: ${first.message.split("\n")[0]}`,
      "fix it and push again",
    );
  const committed = doc.get("accessToken");
  if (committed !== step.placeholder) {
    throw fail(
      "SOURCE_INVALID",
      `${step.source} must carry accessToken: ${step.placeholder}, not a real token`,
      "redact the token in git (and rotate it: it has been committed)",
    );
  }
  const missing = step.requiredKeys.filter((k) => !doc.has(k));
  if (missing.length)
    throw fail(
      "SOURCE_INVALID",
      `${step.source} lacks ${missing.join(", ")}`,
      "restore the keys and push again",
    );
  doc.set("accessToken", token);
  return Buffer.from(doc.toString({ lineWidth: 0 }));
}

/**
 * The config as diffs may show it: the `accessToken` value replaced where the YAML parser found it (by its
 * node's source range, so any quoting or escaping of the token is covered), everything else as written.
 */
function redactToken(buf: Buffer | null): Buffer | null {
  if (!buf) return null;
  const text = buf.toString("utf8");
  const doc = parseDocument(text);
  if (doc.errors.length) return Buffer.from("(not valid YAML: not shown)\n");
  const keyed = (name: string) =>
    isMap(doc.contents) ? doc.contents.items.find((p) => isScalar(p.key) && p.key.value === name) : undefined;
  const pair = keyed("accessToken");
  // Draupnir's loader resolves aliases and `<<` merge keys: a token reached through either is written
  // elsewhere in the file (at its anchor), where no range of this pair covers it.
  const mergesToken = (merged: unknown, depth: number): boolean =>
    (isSeq(merged) ? merged.items : [merged]).some((n) => {
      const map = isAlias(n) ? n.resolve(doc) : n;
      // A merged map may merge others in turn; a chain this deep is refused rather than followed.
      return (
        isMap(map) && (map.has("accessToken") || depth > 8 || mergesToken(map.get("<<", true), depth + 1))
      );
    });
  if ((pair && !isScalar(pair.value)) || mergesToken(keyed("<<")?.value, 0))
    return Buffer.from("(accessToken not a plain value, or merged in: not shown)\n");
  const range = pair && isNode(pair.value) ? pair.value.range : undefined;
  if (pair && !range) return Buffer.from("(not valid YAML: not shown)\n");
  if (!range) return buf;
  return Buffer.from(`${text.slice(0, range[0])}${REDACTED}${text.slice(range[1])}`);
}

async function restartAndCheck(
  step: DraupnirConfigStep,
  ctx: Omit<StepContext, "source">,
): Promise<{ healthy: boolean; last: string }> {
  await ctx.run([...ctx.commands.systemctl, "restart", step.service]);
  return ctx.health(step.healthUrl, step.healthTimeoutSeconds);
}

export const draupnirConfigStep: StepKind<typeof schema> = {
  schema,
  // A new token is a commit of its secret: that makes the step run too.
  sources: (step) => [
    step.source,
    ...(step.tokenSecret ? [secretFile(step.tokenSecret.name), CATALOG_FILE] : []),
  ],
  triggers: (step) => [
    step.source,
    ...(step.tokenSecret ? [secretFile(step.tokenSecret.name), CATALOG_FILE] : []),
  ],

  async check(step, repo) {
    if (!repo.paths().includes(step.source)) return [];
    try {
      // The merge a deploy makes, with a stand-in for the live token: YAML, the placeholder, required keys.
      merge(step, await repo.read(step.source), "stand-in-for-the-live-token");
      return [];
    } catch (err) {
      return [asAgentError(err).message];
    }
  },

  // The placeholder stays visible; any other accessToken value is left out.
  shown(step, data) {
    const doc = parseDocument(data.toString("utf8"));
    return !doc.errors.length && doc.get("accessToken") === step.placeholder
      ? data
      : (redactToken(data) ?? data);
  },

  rollbackSeconds: (step) => step.rollbackTimeoutSeconds,

  plan(step) {
    return [
      step.tokenSecret
        ? `merge ${step.source} with the accessToken of secret ${step.tokenSecret.name}, write it to ${step.target} (0600)`
        : `merge ${step.source} with the live accessToken of ${step.target}, write it (0600)`,
      `restart ${step.service}, wait for ${step.healthUrl}; roll back if unhealthy`,
    ];
  },

  async drift(step, ctx) {
    const live = await ctx.host.snapshot(step.target);
    let wanted: Buffer;
    try {
      wanted = merge(step, await ctx.source.read(step.source), await wantedToken(step, ctx, live.data));
    } catch (err) {
      const e = asAgentError(err);
      // No live token to keep (the config deleted, unparsable, or with the placeholder): that is drift, and
      // one a run cannot put back (it refuses the same way); a repository config that is invalid cannot be told.
      return [
        e.code === "TOKEN_UNAVAILABLE"
          ? { id: step.target, state: "drifted", detail: e.message, stalled: true }
          : { id: step.target, state: "unknown", detail: e.message },
      ];
    }
    // The live token is what the step keeps: only everything around it is compared with git.
    return [await fileDrift(ctx, step.target, wanted, { mode: 0o600, display: (b) => redactToken(b) })];
  },

  async apply(step, ctx, work) {
    const before = await ctx.host.snapshot(step.target);
    const token = await wantedToken(step, ctx, before.data);
    const next = merge(step, await ctx.source.read(step.source), token);
    const display = { before: redactToken(before.data), after: redactToken(next) ?? Buffer.alloc(0) };
    const { outcome } = await ctx.host.write(step.target, next, { mode: 0o600, display });
    // An unchanged config needs no restart, unless the last attempt was cut off before it restarted.
    if (outcome === "unchanged" && !work.resume) return [{ id: step.target, outcome }];

    let health: { healthy: boolean; last: string };
    try {
      health = await restartAndCheck(step, ctx);
    } catch (err) {
      // The restart itself failed: the new config must not stay behind as if it were deployed.
      health = { healthy: false, last: asAgentError(err).message };
    }
    if (health.healthy) return [{ id: step.target, outcome }];
    if (outcome === "unchanged") {
      throw new AgentError(
        "HEALTH_CHECK_FAILED",
        `${step.service} is unhealthy after its restart (${health.last})`,
        {
          hint: `journalctl -u ${step.service} -n 50`,
        },
      );
    }
    // Under its own deadline: after a timeout the step's signal has fired, and a restart under it would be
    // cancelled at once, leaving Draupnir on a config the file no longer has.
    const after = await ctx.rollback(step.rollbackTimeoutSeconds, async (back) => {
      await back.host.restore(before);
      return restartAndCheck(step, back).catch((err: unknown) => ({
        healthy: false,
        last: asAgentError(err).message,
      }));
    });
    throw new AgentError(
      "HEALTH_CHECK_FAILED",
      `${step.service} was unhealthy after the new config (${health.last}); previous config restored, ${after.healthy ? "and it is healthy again" : `but it is still unhealthy (${after.last})`}`,
      { hint: `journalctl -u ${step.service} -n 50` },
    );
  },
};
