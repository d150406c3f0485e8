import { isIP } from "node:net";
import { z } from "zod";
import { JOBS, jobConfig, jobSections } from "../jobs/index.js";
import { notifySchema } from "../notify/notifier.js";
import { historyBoundsSchema } from "../state/history.js";
import { argv, hostPath } from "../steps/common.js";
import { stepSchema } from "../steps/index.js";

/** An address or CIDR, parsed once at load into what a BlockList takes. */
export interface Subnet {
  address: string;
  prefix: number;
  family: "ipv4" | "ipv6";
}

const cidr = z.string().transform((v, ctx): Subnet => {
  const [address = "", prefix, extra] = v.split("/");
  const family = isIP(address);
  const bits = prefix === undefined ? (family === 6 ? 128 : 32) : Number(prefix);
  if (
    family === 0 ||
    extra !== undefined ||
    !Number.isInteger(bits) ||
    bits < 0 ||
    bits > (family === 6 ? 128 : 32)
  ) {
    ctx.addIssue({ code: "custom", message: "must be an address or CIDR such as 10.10.10.0/24" });
    return z.NEVER;
  }
  return { address, prefix: bits, family: family === 6 ? "ipv6" : "ipv4" };
});

/**
 * Commit signatures a revision must carry. `tip`: the commit deployed; `all`: every commit between the last
 * deployed revision and the new one, so an unsigned commit cannot hide under a signed one. SSH signatures
 * are checked against an allowed-signers file (git's gpg.ssh.allowedSignersFile format, with an optional
 * revocation file), OpenPGP ones against the public keys in a GnuPG home.
 */
const verifySchema = z
  .strictObject({
    mode: z.enum(["off", "tip", "all"]).default("off"),
    allowedSignersFile: hostPath.optional(),
    revokedKeysFile: hostPath.optional(),
    gpgHome: hostPath.optional(),
  })
  .prefault({})
  .refine((v) => v.mode === "off" || v.allowedSignersFile !== undefined || v.gpgHome !== undefined, {
    message: "verify needs allowedSignersFile (SSH) or gpgHome (OpenPGP) unless mode is off",
  });

/** The URL path of the webhook route. */
export const webhookPath = z
  .string()
  .regex(/^\/[A-Za-z0-9._~/-]*$/, { message: "must be an absolute URL path" });

/** How `serve` takes Gitea's push webhook. */
const webhookSchema = z
  .strictObject({
    /** Keep the old hook URL: the webhook binary served /hooks/<id>. */
    path: webhookPath.default("/hooks/deploy"),
    /** File holding the shared secret (one line); used unless secretEnv is set. */
    secretFile: hostPath.default("/etc/deploy-agent/webhook-secret"),
    /** During a rotation: the secret Gitea is being moved to, accepted beside the current one. */
    nextSecretFile: hostPath.default("/etc/deploy-agent/webhook-secret.next"),
    /** Name of an env-file/environment variable holding the secret instead, e.g. WEBHOOK_SECRET. */
    secretEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
      .optional(),
    /** Source addresses allowed to reach the listener (empty: all); others get 403 before the body is read. */
    allowFrom: z.array(cidr).default([]),
    bodyLimitBytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    /** Fallback poll of the remote for lost deliveries; 0 turns it off. */
    pollIntervalSeconds: z.number().int().min(0).max(86_400).default(300),
    /** A delivery id seen within this window is acknowledged and not run again. */
    duplicateWindowSeconds: z.number().int().min(0).max(604_800).default(3600),
    /** /healthz turns 503 after this many failed runs in a row. */
    unhealthyAfterFailures: z.number().int().min(1).max(100).default(3),
    /** How long a run waits for the deploy lock held by another run (a hand-run `run`); then LOCKED. */
    lockWaitSeconds: z.number().int().min(0).max(3600).default(60),
    /**
     * What any client may cost: memory is at most maxConnections × bodyLimitBytes for request bodies, and
     * every connection ends within these timeouts, whatever it sends.
     */
    limits: z
      .strictObject({
        maxConnections: z.number().int().min(4).max(10_000).default(64),
        /** The whole request, body included (a slow body is cut off). */
        requestTimeoutSeconds: z.number().int().min(1).max(300).default(15),
        headersTimeoutSeconds: z.number().int().min(1).max(300).default(10),
        /** An idle keep-alive connection is closed after this. */
        idleTimeoutSeconds: z.number().int().min(1).max(300).default(10),
      })
      .prefault({}),
    /**
     * Who may read /status and /metrics. Unset: anyone who can reach the port (as /healthz always).
     * Set: a source in allowFrom, or a request with `Authorization: Bearer <the token in tokenFile>`.
     */
    statusAccess: z
      .strictObject({
        allowFrom: z.array(cidr).default([]),
        tokenFile: hostPath.optional(),
      })
      .optional(),
    /**
     * Live previews: a `pull_request` event (opened, reopened, synchronized) to the same webhook makes the
     * agent dry-run the pull request's head against this host and set the commit status preview/<host>
     * (src/server/preview.ts). Off unless enabled here, in the manifest file the agent starts with.
     */
    previews: z
      .strictObject({
        enabled: z.boolean().default(false),
        /** Pull requests waiting for a preview at most; one more is dropped (and counted). */
        maxPending: z.number().int().min(1).max(100).default(10),
      })
      .prefault({}),
  })
  .prefault({});

/** The host manifest (`config/<host>.yaml`). This schema is the single source of its types. */
export const manifestSchema = z
  .strictObject({
    version: z.literal(1),
    host: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]*$/, { message: "must be lowercase letters, digits and dashes" }),
    description: z.string().optional(),
    listen: z.strictObject({
      host: z.string().min(1).default("0.0.0.0"),
      port: z.number().int().min(1).max(65535),
    }),
    repo: z
      .strictObject({
        path: hostPath.default("/opt/matrix-config"),
        // A git remote's name; it is passed to `git fetch` as an argument, so never an option.
        remote: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, { message: "must be a git remote name" })
          .default("origin"),
        branch: z
          .string()
          .regex(/^[A-Za-z0-9._/-]+$/, { message: "must be a branch name" })
          .default("main"),
        /** Deploy only signed commits (checked by git itself; src/source/verify.ts). */
        verify: verifySchema,
      })
      .prefault({}),
    webhook: webhookSchema,
    /** How people and `deploy-agent fleet` reach this agent, e.g. http://10.10.10.29:9500 (links in notices). */
    publicUrl: z.url({ protocol: /^https?$/ }).optional(),
    /** Gitea commit statuses and JSON events (src/notify/notifier.ts); none: nothing is sent. */
    notify: notifySchema,
    /** `serve` compares what is live with git at start and this often (0: never); steps with selfHeal re-apply. */
    drift: z.strictObject({ intervalSeconds: z.number().int().min(0).max(86_400).default(600) }).prefault({}),
    /** dotenv file whose variables `${VAR}` references may use; the process environment wins over it. */
    envFile: hostPath.optional(),
    stateDir: hostPath.default("/var/lib/deploy-agent"),
    /** The deploy history in stateDir (src/state/history.ts): how many records, and how old, it keeps. */
    history: historyBoundsSchema,
    log: z
      .strictObject({
        file: hostPath.optional(),
        level: z.enum(["trace", "debug", "info", "warn", "error"]).default("info"),
      })
      .prefault({}),
    /** Commands steps call; tests and staging point them at stand-ins. */
    commands: z
      .strictObject({
        systemctl: argv.default(["systemctl"]),
      })
      .prefault({}),
    /** One optional section per host job (src/jobs/): `livekit`, `cinny`. */
    ...jobSections,
    steps: z.array(stepSchema).min(1),
  })
  .superRefine((m, ctx) => {
    for (const job of JOBS) {
      const config = jobConfig(m, job);
      if (config === undefined) continue;
      for (const issue of job.check(config, m.steps)) ctx.addIssue({ code: "custom", ...issue });
    }
    const seen = new Set<string>();
    m.steps.forEach((step, i) => {
      if (seen.has(step.name)) {
        ctx.addIssue({
          code: "custom",
          path: ["steps", i, "name"],
          message: `duplicate step name "${step.name}"`,
        });
      }
      seen.add(step.name);
    });
  });

export type Manifest = z.infer<typeof manifestSchema>;
