import { z } from "zod";
import { argv, hostPath } from "../steps/common.js";
import { stepSchema } from "../steps/index.js";

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
        remote: z.string().min(1).default("origin"),
        branch: z
          .string()
          .regex(/^[A-Za-z0-9._/-]+$/, { message: "must be a branch name" })
          .default("main"),
      })
      .prefault({}),
    /** dotenv file whose variables `${VAR}` references may use; the process environment wins over it. */
    envFile: hostPath.optional(),
    stateDir: hostPath.default("/var/lib/deploy-agent"),
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
    steps: z.array(stepSchema).min(1),
  })
  .superRefine((m, ctx) => {
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
