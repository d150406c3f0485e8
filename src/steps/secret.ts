import { z } from "zod";
import { asAgentError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import type { FileSnapshot } from "../host/host-fs.js";
import { CATALOG_FILE, fingerprint, parseCatalog, secretFile, secretName } from "../secrets/catalog.js";
import { HOST_IDENTITY_FILE } from "../secrets/identity.js";
import { checkMatrixToken } from "../secrets/matrix-check.js";
import { openSecret } from "../secrets/open.js";
import { liveValue, type Placement, place, shown } from "../secrets/place.js";
import { argv, fileMode, hostPath, owner, stepCommon } from "./common.js";
import { fileDrift, unreadable } from "./drift.js";
import { HOOK_EVENT_TYPE } from "./hookshot.js";
import type { StepContext, StepKind } from "./types.js";

/**
 * `secret`: one secret of the repository (`secrets/<name>.age`, age-encrypted to this host's identity),
 * decrypted in memory and written atomically into its target with its mode (0600) and owner: the whole
 * file, one `KEY=value` line of an env file, or one YAML node. With `matrix`, a new value is a Matrix token
 * checked (whoami, membership, power level for the state event) before it replaces the old one. `reload`
 * runs after a change; a failed reload puts the old file back and runs `reload` again. Diffs, drift, dry
 * runs and the step's items show fingerprints (`sha256:` + 12 hex digits), never values. The age library
 * is loaded by the first secret step that runs, not at start-up (src/secrets/age.ts).
 */
export const schema = z
  .strictObject({
    ...stepCommon,
    kind: z.literal("secret"),
    secret: secretName,
    target: hostPath,
    format: z.enum(["file", "env", "yaml"]).default("file"),
    /** env: the variable's name; yaml: the node's key path, dot-separated (`accessToken`). */
    key: z.string().min(1).optional(),
    mode: fileMode.default(0o600),
    owner: owner.optional(),
    /** This host's age identity (made by install). */
    identityFile: hostPath.default(HOST_IDENTITY_FILE),
    reload: z.array(argv).default([]),
    /** The value is a Matrix token: checked against this room before it replaces the old one. */
    matrix: z
      .strictObject({
        homeserver: z.url({ protocol: /^https?$/ }),
        room: z.string().regex(/^!.+$/, { message: "must be a room ID (!…)" }),
        /** The state event the token must be allowed to send. */
        eventType: z.string().min(1).default(HOOK_EVENT_TYPE),
        timeoutMs: z.number().int().min(100).max(300_000).default(15_000),
      })
      .optional(),
  })
  .superRefine((step, ctx) => {
    if (step.format === "file" && step.key !== undefined) {
      ctx.addIssue({ code: "custom", path: ["key"], message: "format file writes the whole file: no key" });
    }
    if (step.format !== "file" && step.key === undefined) {
      ctx.addIssue({ code: "custom", path: ["key"], message: `format ${step.format} needs key` });
    }
    if (step.format === "env" && step.key !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(step.key)) {
      ctx.addIssue({ code: "custom", path: ["key"], message: "must be an env variable name" });
    }
  });

export type SecretStep = z.infer<typeof schema>;

const placement = (step: SecretStep): Placement =>
  step.format === "file" ? { format: "file" } : { format: step.format, key: step.key ?? "" };

const label = (step: SecretStep) => (step.format === "file" ? step.target : `${step.key} in ${step.target}`);

async function checkToken(step: SecretStep, ctx: StepContext, value: string): Promise<void> {
  if (!step.matrix) return;
  const m = step.matrix;
  const matrix = ctx.matrix({
    homeserver: m.homeserver,
    token: new Secret(value),
    attempts: 3,
    backoffMs: 500,
    timeoutMs: m.timeoutMs,
  });
  await checkMatrixToken(matrix, m.room, m.eventType, `the new ${step.secret} for ${label(step)}`);
}

export const secretStep: StepKind<typeof schema> = {
  schema,
  sources: (step) => [secretFile(step.secret), CATALOG_FILE],
  triggers: (step) => [secretFile(step.secret), CATALOG_FILE],

  async check(step, repo) {
    if (!repo.paths().includes(CATALOG_FILE)) return [];
    try {
      const catalog = parseCatalog((await repo.read(CATALOG_FILE)).toString("utf8"));
      return catalog.secrets[step.secret] ? [] : [`${CATALOG_FILE} lists no secret "${step.secret}"`];
    } catch (err) {
      return [asAgentError(err).message];
    }
  },

  plan(step) {
    const lines = [
      `decrypt secret ${step.secret} with ${step.identityFile}, write it as ${label(step)} (mode 0${step.mode.toString(8)})`,
    ];
    if (step.matrix) lines.push(`check a new token first: whoami and power level in ${step.matrix.room}`);
    if (step.reload.length) lines.push(`then run: ${step.reload.map((c) => c.join(" ")).join("; ")}`);
    return lines;
  },

  async drift(step, ctx) {
    const p = placement(step);
    let wanted: Buffer;
    try {
      const value = await openSecret(ctx, step.secret, step.identityFile);
      wanted = place(p, step.target, (await ctx.host.snapshot(step.target)).data, value);
    } catch (err) {
      // A target that is no longer a regular file is drift; a secret that cannot be opened cannot be told.
      return [unreadable(step.target, err)];
    }
    return [
      await fileDrift(ctx, step.target, wanted, {
        mode: step.mode,
        owner: step.owner,
        display: (b) => shown(p, b),
      }),
    ];
  },

  async apply(step, ctx, work) {
    const p = placement(step);
    const value = await openSecret(ctx, step.secret, step.identityFile);
    const before = await ctx.host.snapshot(step.target);
    const live = liveValue(p, before.data);
    const next = place(p, step.target, before.data, value);
    if (live !== value) await checkToken(step, ctx, value);
    const detail =
      live === value
        ? fingerprint(value)
        : `${live === undefined ? "none" : fingerprint(live)} -> ${fingerprint(value)}`;
    const { outcome, previous } = await ctx.host.write(step.target, next, {
      mode: step.mode,
      owner: step.owner,
      display: { before: shown(p, before.data), after: shown(p, next) ?? Buffer.alloc(0) },
    });
    if (outcome === "changed" || work.resume) {
      try {
        for (const command of step.reload) await ctx.run(command);
      } catch (err) {
        if (outcome === "changed") await rollBack(step, ctx, previous);
        throw err;
      }
    }
    return [{ id: step.target, outcome, detail }];
  },
};

async function rollBack(step: SecretStep, ctx: StepContext, previous: FileSnapshot): Promise<void> {
  await ctx.host.restore(previous);
  for (const command of step.reload) {
    await ctx.run(command).catch((err: Error) => {
      ctx.log.warn({ err }, "reload after restoring the previous secret failed");
    });
  }
}
