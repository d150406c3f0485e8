/**
 * Matrix API calls per push: deploy-agent's hookshot step against the old "push every transform" script,
 * on the same test homeserver, for (a) a push that changes one transform, (b) a push that changes
 * nothing relevant and (c) a prelude change (every transform). Then scale: 500 changed transforms under rate limiting (bounded concurrency,
 * retry_after_ms honoured).
 */
import { execFile } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { makeAgent, PROJECT, unitEnvironment, writeManifest } from "../test/helpers/agent.js";
import { type Files, git, makeFixture } from "../test/helpers/git.js";
import { startMatrixServer } from "../test/helpers/matrix-server.js";
import { QUICK } from "./lib.js";
import { repositoryFiles, SECRET, serviceEnv } from "./systems.js";

/** Prelude changes timed, each system once per push. */
const PRELUDE_PUSHES = QUICK ? 1 : 3;

const ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
const TOKEN = "syt_bench_token";
const TYPE = "uk.half-shot.matrix-hookshot.generic.hook";

async function agentRun(
  files: Files,
  transforms: Record<string, null>,
  hsUrl: string,
  dirName: string,
  concurrency = 4,
  fixtures?: string,
) {
  const fx = makeFixture(files);
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "hookshot",
        kind: "hookshot",
        directory: dirName,
        prelude: files["hookshot/lib/prelude.js"] ? "hookshot/lib/prelude.js" : undefined,
        homeserver: hsUrl,
        room: ROOM,
        token: TOKEN,
        transforms,
        concurrency,
        fixtures,
      },
    ],
  });
  const agent = makeAgent(fx.dir, fx.clone, manifestFile);
  const run = () => agent.run();
  return { fx, run };
}

/** Runs a command to its end; its wall time in ms (asynchronously: the test homeserver answers from this process). */
async function timed(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const t = performance.now();
  await promisify(execFile)(command, args, { env, maxBuffer: 64 * 2 ** 20 });
  return performance.now() - t;
}

/**
 * LXC 151's deploy from a push, both systems cold, as a process each, on one origin of this repository:
 * `deploy-agent run` (the bin, the unit's environment) with the shipped config/lxc151.yaml and its env
 * file, against the old deploy (bench/baseline/deploy-hookshot.sh: fetch, hard reset, diff, and on a
 * hookshot change the old hookshot/deploy.sh, one `jq` + `curl` PUT per transform). Both fetch from the
 * same origin into their own clone; the order alternates at each push.
 */
export async function matrixCalls() {
  const hs = await startMatrixServer({
    roomId: ROOM,
    users: { [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
  });
  const names = readdirSync(path.join(PROJECT, "hookshot")).filter((f) => f.endsWith(".js"));
  for (const n of names)
    hs.state.set(`${TYPE}/${n.replace(/\.js$/, "")}`, { name: n.replace(/\.js$/, ""), hookId: n });
  const fx = makeFixture(repositoryFiles());
  const root = path.join(fx.dir, "root");
  for (const d of ["etc/systemd/system", "run", "var/log", "var/lib"])
    mkdirSync(path.join(root, d), { recursive: true });
  const matrixEnv = { MATRIX_SERVER: hs.url, MATRIX_ROOM: ROOM, MATRIX_TOKEN: TOKEN };
  writeFileSync(
    path.join(root, "etc/matrix-deploy.env"),
    `${Object.entries({ ...matrixEnv, WEBHOOK_SECRET: SECRET })
      .map(([k, v]) => `${k}=${v}`)
      .join("\n")}\n`,
    { mode: 0o600 },
  );
  const agent = () =>
    timed(
      path.join(PROJECT, "dist/src/bin.js"),
      [
        "run",
        ...["--config", path.join(fx.clone, "config/lxc151.yaml"), "--repo", fx.clone, "--root", root],
        ...["--state-dir", path.join(root, "var/lib/deploy-agent")],
      ],
      { ...serviceEnv(), ...unitEnvironment() },
    );
  const legacyClone = path.join(fx.dir, "legacy");
  git(fx.dir, "clone", "--quiet", fx.origin, legacyClone);
  const legacy = () =>
    timed(path.join(PROJECT, "bench/baseline/deploy-hookshot.sh"), [legacyClone], {
      ...serviceEnv(),
      ...matrixEnv,
    });
  // The host's first run: every step applied once (the transforms are already in the room).
  await agent();
  const read = (f: string) => readFileSync(path.join(PROJECT, f), "utf8");
  let turn = 0;
  /** One push, then both systems in turn: requests, writes and wall time of each. */
  const count = async (push: Files) => {
    fx.push(push);
    const runs = turn++ % 2 ? ([legacy, agent] as const) : ([agent, legacy] as const);
    const out = new Map<() => Promise<number>, { requests: number; writes: number; ms: number }>();
    for (const run of runs) {
      const [r0, w0] = [hs.requests.length, hs.writes()];
      const ms = Math.round(await run());
      out.set(run, { requests: hs.requests.length - r0, writes: hs.writes() - w0, ms });
    }
    return { agent: out.get(agent) as Calls, legacy: out.get(legacy) as Calls };
  };
  const oneTransform = await count({ "hookshot/grafana.js": `${read("hookshot/grafana.js")}\n// changed\n` });
  const clobbered = hs.state.get(`${TYPE}/grafana`)?.hookId === undefined;
  const unrelated = await count({ "README.md": `${read("README.md")}\nunrelated change\n` });
  // A prelude change: every transform is checked, compared and written again; repeated for the spread.
  const prelude: { agent: Calls; legacy: Calls }[] = [];
  for (let i = 0; i < PRELUDE_PUSHES; i++)
    prelude.push(await count({ "hookshot/lib/prelude.js": `${read("hookshot/lib/prelude.js")}\n// ${i}\n` }));
  await hs.close();
  fx.cleanup();
  const ms = (xs: Calls[]) => xs.map((x) => x.ms);
  const first = prelude[0] as { agent: Calls; legacy: Calls };
  return {
    agent: {
      oneTransformChanged: oneTransform.agent,
      unrelatedPush: unrelated.agent,
      preludeChanged: { ...first.agent, transforms: names.length, allMs: ms(prelude.map((p) => p.agent)) },
    },
    baseline: {
      oneTransformChanged: oneTransform.legacy,
      unrelatedPush: unrelated.legacy,
      preludeChanged: { ...first.legacy, transforms: names.length, allMs: ms(prelude.map((p) => p.legacy)) },
    },
    baselineDroppedHookshotKeys: clobbered,
  };
}

interface Calls {
  requests: number;
  writes: number;
  ms: number;
}

export async function manyTransforms(count = 500, retryAfterMs = 250, limitedRequests = 12) {
  const hs = await startMatrixServer({
    roomId: ROOM,
    users: { [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
  });
  const files: Files = {};
  const transforms: Record<string, null> = {};
  for (let i = 0; i < count; i++) {
    files[`hookshot/t${i}.js`] = `result = { version: "v2", plain: "t${i}: " + data.text };\n`;
    transforms[`t${i}.js`] = null;
    hs.state.set(`${TYPE}/t${i}`, { name: `t${i}`, transformationFunction: "old" });
  }
  const { fx, run } = await agentRun(files, transforms, hs.url, "hookshot");
  hs.rateLimit(limitedRequests, retryAfterMs);
  const t = performance.now();
  const report = await run();
  const ms = performance.now() - t;
  // For every 429, how long until the same request (same path) was sent again.
  const limited = hs.requests.filter((r) => r.status === 429);
  const retryGaps = limited.map((r) => {
    const again = hs.requests.find((x) => x.path === r.path && x.at > r.at);
    return again ? again.at - r.at : Number.NaN;
  });
  const result = {
    transforms: count,
    result: report.result,
    totalMs: Math.round(ms),
    writes: hs.writes(),
    requests: hs.requests.length,
    maxInFlight: hs.maxInFlight(),
    rateLimited: limited.length,
    retryAfterMs,
    shortestRetryAfterMs: Math.min(...retryGaps),
  };
  await hs.close();
  fx.cleanup();
  return result;
}
