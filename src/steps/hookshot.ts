import path from "node:path";
import { z } from "zod";
import { asAgentError } from "../core/errors.js";
import { pool } from "../core/pool.js";
import { Secret } from "../core/secret.js";
import { checkTransforms, type TransformVerdict, warmChecks } from "../hookshot/checks.js";
import { unsendableSegment } from "../matrix/client.js";
import type { StepItem } from "../state/state.js";
import { repoPath, stepCommon } from "./common.js";
import type { DriftItem, RepoFiles, StepContext, StepKind, StepMatrix } from "./types.js";

/**
 * `hookshot`: push changed transformation functions into hookshot's generic-webhook room state.
 * The state key is the connection name (not the webhook UUID). Each transform is compile-checked the way
 * hookshot does it; the connection must already exist (creating one would mint a new webhook URL); an equal
 * function is not written; a write is `{...current, transformationFunction}` (a PUT replaces the whole
 * content, and losing `name` breaks the hook) and is read back. Deleted files are reported, never removed
 * from the room.
 */
export const HOOK_EVENT_TYPE = "uk.half-shot.matrix-hookshot.generic.hook";

/** A transform's state key when the manifest maps it to null: its file name without .js. */
const defaultStateKey = (file: string) => path.posix.basename(file, ".js");

export const schema = z.strictObject({
  ...stepCommon,
  kind: z.literal("hookshot"),
  /** Repository directory holding one `<service>.js` per webhook. */
  directory: repoPath.default("hookshot"),
  /** Shared helpers prepended to every transform (outside `directory`'s top level); a change re-pushes all. */
  prelude: repoPath.optional(),
  homeserver: z.url({
    protocol: /^https?$/,
    error: "must be an http(s) URL such as https://matrix.example.org",
  }),
  room: z.string().regex(/^!.+$/, { message: "must be a room ID (!…)" }),
  token: z
    .string()
    .min(1)
    .transform((v) => new Secret(v)),
  eventType: z
    .string()
    .min(1)
    .refine((t) => !unsendableSegment(t), {
      error: (i) => `event type ${unsendableSegment(String(i.input))}`,
    })
    .default(HOOK_EVENT_TYPE),
  /** Every transform file → its connection's state key (null: the file name without .js). */
  transforms: z
    .record(
      z.string().regex(/^[A-Za-z0-9._-]+\.js$/, { message: "must be a .js file name" }),
      z.string().min(1).nullable(),
    )
    .superRefine((transforms, ctx) => {
      // Two files for one connection would write one over the other on every run.
      const owner = new Map<string, string>();
      for (const [file, mapped] of Object.entries(transforms)) {
        const key = mapped ?? defaultStateKey(file);
        const why = unsendableSegment(key);
        if (why) ctx.addIssue({ code: "custom", path: [file], message: `state key ${why}` });
        const first = owner.get(key);
        if (first !== undefined)
          ctx.addIssue({
            code: "custom",
            path: [file],
            message: `connection "${key}" is already the target of ${first}`,
          });
        else owner.set(key, file);
      }
    }),
  concurrency: z.number().int().min(1).max(16).default(4),
  /** Payload samples per transform (`<fixtures>/<file name without .js>/*.json`) that validate runs it on. */
  fixtures: repoPath.optional(),
  /** Attempts per request and the first backoff (doubling) on 5xx, network errors and timeouts. */
  retry: z
    .strictObject({
      attempts: z.number().int().min(1).max(10).default(5),
      backoffMs: z.number().int().min(1).max(60_000).default(500),
      /** A request that has not answered by then counts as failed (and is retried). */
      timeoutMs: z.number().int().min(100).max(300_000).default(15_000),
    })
    .prefault({}),
});

export type HookshotStep = z.infer<typeof schema>;

const stateKeyOf = (step: HookshotStep, file: string) => step.transforms[file] ?? defaultStateKey(file);
/** A live connection: hookshot removes one by replacing its state with content that has no `name`. */
const isConnection = (
  content: Record<string, unknown> | null,
): content is Record<string, unknown> & { name: string } => typeof content?.name === "string";
const fileOf = (step: HookshotStep, rel: string) =>
  path.posix.dirname(rel) === step.directory && rel.endsWith(".js") ? path.posix.basename(rel) : null;

/** The fixtures (JSON text) of a transform's service, by path. */
async function fixturesOf(step: HookshotStep, repo: RepoFiles, file: string): Promise<[string, string][]> {
  if (!step.fixtures) return [];
  const prefix = `${step.fixtures}/${path.posix.basename(file, ".js")}/`;
  const paths = repo.paths().filter((p) => p.startsWith(prefix) && p.endsWith(".json"));
  return Promise.all(
    paths.map(async (p): Promise<[string, string]> => [p, (await repo.read(p)).toString("utf8")]),
  );
}

/** A throw, "No content" or an empty message on a fixture is a problem. */
function fixtureProblems(
  step: HookshotStep,
  file: string,
  fixtures: readonly string[],
  runs: TransformVerdict["runs"],
): string[] {
  return runs.flatMap((run, i) => {
    const where = `${step.directory}/${file} on ${fixtures[i]}`;
    if ("error" in run) return [`${where}: ${run.error}`];
    const content = run.output.content;
    return content && (content.plain === "No content" || content.plain.trim() === "")
      ? [`${where}: hookshot would post "${content.plain}"`]
      : [];
  });
}

/** The transform files a change touches: all mapped ones when the prelude changed. */
function transformsFor(step: HookshotStep, files: readonly string[]): string[] {
  if (step.prelude && files.includes(step.prelude)) {
    const all = Object.keys(step.transforms).map((f) => `${step.directory}/${f}`);
    return [...new Set([...files.filter((f) => f !== step.prelude), ...all])];
  }
  return [...files];
}

/** The function hookshot stores: the prelude (if any), then the transform. */
export async function assemble(
  step: HookshotStep,
  read: (path: string) => Promise<Buffer>,
  rel: string,
): Promise<string> {
  const own = (await read(rel)).toString("utf8");
  return step.prelude ? `${(await read(step.prelude)).toString("utf8")}\n${own}` : own;
}

/** The transforms' sources, mapped files present in the revision only, checked in one child process. */
async function problemsOf(step: HookshotStep, ctx: StepContext, files: readonly string[]) {
  const srcs = new Map<string, string>();
  for (const file of files) {
    const rel = `${step.directory}/${file}`;
    if (file in step.transforms && (await ctx.source.has(rel))) {
      srcs.set(file, await assemble(step, (p) => ctx.source.read(p), rel));
    }
  }
  const verdicts = await checkTransforms(
    [...srcs.values()].map((src) => ({ src, payloads: [] })),
    { signal: ctx.signal },
  );
  return new Map(
    [...srcs.keys()].map((file, i) => [
      file,
      { src: srcs.get(file) as string, problem: verdicts[i]?.problem ?? null },
    ]),
  );
}

async function syncOne(
  step: HookshotStep,
  ctx: StepContext,
  matrix: StepMatrix,
  file: string,
  checked: { src: string; problem: string | null } | undefined,
): Promise<StepItem> {
  const rel = `${step.directory}/${file}`;
  const key = stateKeyOf(step, file);
  const id = `${rel} -> ${key}`;
  if (!(await ctx.source.has(rel))) {
    return {
      id: rel,
      outcome: "skipped",
      detail: "deleted from the repository; the connection in the room is left as it is",
    };
  }
  if (!(file in step.transforms)) {
    return {
      id: rel,
      outcome: "failed",
      detail: `not mapped to a connection: add "${file}" under transforms in the manifest`,
    };
  }
  if (!checked) throw new Error(`${rel} was not checked`);
  const { src, problem } = checked;
  if (problem) return { id, outcome: "failed", detail: problem };

  try {
    const current = await matrix.getState(step.room, step.eventType, key);
    if (!isConnection(current)) {
      return {
        id,
        outcome: "failed",
        detail: `no hookshot connection "${key}" in ${step.room}; create the webhook in hookshot first (the agent never creates one: that would mint a new URL)`,
      };
    }
    if (current.transformationFunction === src) return { id, outcome: "unchanged" };
    // The whole content, name and hookId included: a PUT replaces it all.
    await matrix.replaceState(
      step.room,
      step.eventType,
      key,
      { ...current, transformationFunction: src },
      `transformationFunction from ${rel}`,
    );
    return { id, outcome: "changed" };
  } catch (err) {
    const e = asAgentError(err);
    if (e.code === "UNDETERMINED") {
      return { id, outcome: "unknown", detail: `${e.message}; a run would compare and write if different` };
    }
    return { id, outcome: "failed", detail: `${e.code}: ${e.message}` };
  }
}

export const hookshotStep: StepKind<typeof schema> = {
  schema,
  sources: (step) => [
    ...(step.prelude ? [step.prelude] : []),
    ...Object.keys(step.transforms).map((f) => `${step.directory}/${f}`),
  ],
  triggers: (step) => [`${step.directory}/*.js`, ...(step.prelude ? [step.prelude] : [])],

  plan(step, work) {
    return transformsFor(step, work.files).flatMap((rel) => {
      const file = fileOf(step, rel);
      return file ? [`sync ${rel} -> connection "${stateKeyOf(step, file)}" in ${step.room}`] : [];
    });
  },

  async check(step, repo) {
    const files = repo.paths().flatMap((p) => fileOf(step, p) ?? []);
    const problems = files
      .filter((f) => !(f in step.transforms))
      .map((f) => `${step.directory}/${f} is not mapped to a connection under transforms`);
    const mapped = files.filter((f) => f in step.transforms);
    const fixtures = await Promise.all(mapped.map((f) => fixturesOf(step, repo, f)));
    const jobs = await Promise.all(
      mapped.map(async (f, i) => ({
        src: await assemble(step, (p) => repo.read(p), `${step.directory}/${f}`),
        payloads: (fixtures[i] ?? []).map(([, json]) => json),
      })),
    );
    const verdicts = await checkTransforms(jobs);
    mapped.forEach((f, i) => {
      const verdict = verdicts[i] as TransformVerdict;
      if (verdict.problem) problems.push(`${step.directory}/${f} ${verdict.problem}`);
      else
        problems.push(
          ...fixtureProblems(
            step,
            f,
            (fixtures[i] ?? []).map(([p]) => p),
            verdict.runs,
          ),
        );
    });
    return problems;
  },

  async drift(step, ctx) {
    const matrix = ctx.matrix({ homeserver: step.homeserver, token: step.token, ...step.retry });
    return pool(Object.keys(step.transforms), step.concurrency, async (file): Promise<DriftItem> => {
      const rel = `${step.directory}/${file}`;
      const key = stateKeyOf(step, file);
      const id = `${rel} -> ${key}`;
      if (!(await ctx.source.has(rel)))
        return { id, state: "unknown", detail: "not in the repository at the applied revision" };
      const wanted = await assemble(step, (p) => ctx.source.read(p), rel);
      try {
        const current = await matrix.getState(step.room, step.eventType, key);
        if (!isConnection(current))
          return { id, state: "drifted", detail: `no connection "${key}" in ${step.room}` };
        return current.transformationFunction === wanted
          ? { id, state: "in-sync" }
          : {
              id,
              state: "drifted",
              detail: "the room holds another function (edited in hookshot's widget?)",
            };
      } catch (err) {
        return { id, state: "unknown", detail: asAgentError(err).message };
      }
    });
  },

  // The check's child loads Node and QuickJS while the run fetches.
  warm: (_step, signal) => warmChecks(signal),

  async apply(step, ctx, work) {
    const files = [...new Set(transformsFor(step, work.files).flatMap((rel) => fileOf(step, rel) ?? []))];
    const checked = await problemsOf(step, ctx, files);
    const matrix = ctx.matrix({ homeserver: step.homeserver, token: step.token, ...step.retry });
    return pool(files, step.concurrency, (file) => syncOne(step, ctx, matrix, file, checked.get(file)));
  },
};
