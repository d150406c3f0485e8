import path from "node:path";
import { z } from "zod";

/** Zod building blocks shared by the manifest and every step kind. */

const hasDotDot = (p: string) => p.split("/").includes("..");

/** A path inside the config repository: relative, normalized, never climbing out. */
export const repoPath = z
  .string()
  .min(1)
  .refine((p) => !path.posix.isAbsolute(p) && !hasDotDot(p) && path.posix.normalize(p) === p, {
    message: "must be a normalized path relative to the repository root (no leading /, no ..)",
  });

/** A glob over repository paths (picomatch syntax), e.g. `hookshot/*.js`. */
export const repoGlob = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith("/") && !hasDotDot(p), {
    message: "must be a glob relative to the repository root (no leading /, no ..)",
  });

/** An absolute path on the host; `--root` is prefixed to it at run time. */
export const hostPath = z
  .string()
  .min(1)
  .refine((p) => path.posix.isAbsolute(p) && !hasDotDot(p), {
    message: "must be an absolute path without .. segments",
  });

/** A command as an argv array; no shell is involved. */
export const argv = z
  .array(z.string().min(1))
  .min(1, { message: "a command needs at least the program name" });

/** An octal file mode. YAML reads an unquoted 0755 as the decimal 755, so only quoted strings are accepted. */
export const fileMode = z
  .string({ error: 'must be a quoted octal string such as "0644" (an unquoted 0755 is read as decimal)' })
  .regex(/^0?[0-7]{3}$/, { message: 'must be an octal mode such as "0644" or "0755"' })
  .transform((s) => Number.parseInt(s, 8));

/** `user`, `user:group`, or numeric `uid:gid`. */
export const owner = z.string().regex(/^([a-z_][a-z0-9_-]*|\d+)(:([a-z_][a-z0-9_-]*|\d+))?$/, {
  message: "must be user, user:group or uid:gid",
});

export const stepName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { message: "must be lowercase letters, digits and dashes" });

/**
 * The longest a step may run. systemd/deploy-agent@.service gives `serve` this plus a margin to stop
 * (TimeoutStopSec=330), so a step that is running when the unit stops can always finish.
 */
export const MAX_STEP_TIMEOUT_SECONDS = 300;

/** Keys every step kind has. */
export const stepCommon = {
  name: stepName,
  /** Repository globs whose change makes the step run; each kind has a default derived from its sources. */
  paths: z.array(repoGlob).min(1).optional(),
  timeoutSeconds: z.number().int().min(1).max(MAX_STEP_TIMEOUT_SECONDS).default(120),
  /** `serve` re-applies the step when what is live drifted from git (at most once per drift check). */
  selfHeal: z.boolean().default(false),
};
