import { z } from "zod";

/**
 * Cinny's config.json, as Cinny reads it (src/app/hooks/useClientConfig.ts: ClientConfig). Strict: a key
 * Cinny does not read is a typo that would silently do nothing.
 */
export const cinnyConfigSchema = z
  .strictObject({
    defaultHomeserver: z.number().int().min(0).optional(),
    homeserverList: z
      .array(z.string().regex(/^[a-z0-9.-]+(:\d+)?$/i, { message: "must be a server name" }))
      .min(1)
      .optional(),
    allowCustomHomeservers: z.boolean().optional(),
    featuredCommunities: z
      .strictObject({
        openAsDefault: z.boolean().optional(),
        spaces: z.array(z.string().regex(/^[!#]/, { message: "must be a room ID or alias" })).optional(),
        rooms: z.array(z.string().regex(/^[!#]/, { message: "must be a room ID or alias" })).optional(),
        servers: z.array(z.string().min(1)).optional(),
      })
      .optional(),
    hashRouter: z
      .strictObject({ enabled: z.boolean().optional(), basename: z.string().optional() })
      .optional(),
  })
  .refine(
    (c) =>
      c.defaultHomeserver === undefined ||
      (c.homeserverList && c.defaultHomeserver < c.homeserverList.length),
    {
      message: "defaultHomeserver must index into homeserverList",
      path: ["defaultHomeserver"],
    },
  );

/** Problems with a Cinny config text, one per line; empty when Cinny would read it as meant. */
export function cinnyConfigProblems(text: string): string[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return [`not valid JSON: ${(err as Error).message}`];
  }
  const parsed = cinnyConfigSchema.safeParse(json);
  if (parsed.success) return [];
  return parsed.error.issues.map((i) =>
    i.code === "unrecognized_keys"
      ? `${[...i.path, ...i.keys].join(".")}: not a key Cinny reads`
      : `${i.path.join(".") || "(top level)"}: ${i.message}`,
  );
}
