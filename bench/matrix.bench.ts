/**
 * Matrix API calls per push: deploy-agent's hookshot step against the old "push every transform" script,
 * on the same test homeserver, for (a) a push that changes one transform and (b) a push that changes
 * nothing relevant. Then scale: 500 changed transforms under rate limiting (bounded concurrency,
 * retry_after_ms honoured).
 */
import { execFile } from "node:child_process";
import { cpSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { makeAgent, PROJECT, writeManifest } from "../test/helpers/agent.js";
import { type Files, makeFixture } from "../test/helpers/git.js";
import { startMatrixServer } from "../test/helpers/matrix-server.js";

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

export async function matrixCalls() {
  const hs = await startMatrixServer({
    roomId: ROOM,
    users: { [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
  });
  const names = readdirSync(path.join(PROJECT, "hookshot")).filter((f) => f.endsWith(".js"));
  for (const n of names)
    hs.state.set(`${TYPE}/${n.replace(/\.js$/, "")}`, { name: n.replace(/\.js$/, ""), hookId: n });
  const files: Files = {
    "README.md": "x\n",
    "hookshot/lib/prelude.js": readFileSync(path.join(PROJECT, "hookshot/lib/prelude.js")),
  };
  for (const n of names) files[`hookshot/${n}`] = readFileSync(path.join(PROJECT, "hookshot", n));
  // Each transform is also run over its sample payloads before it is pushed, as on LXC 151.
  const payloads = path.join(PROJECT, "test/fixtures/payloads");
  for (const f of readdirSync(payloads, { recursive: true, withFileTypes: true }))
    if (f.isFile()) {
      const full = path.join(f.parentPath, f.name);
      files[path.relative(PROJECT, full)] = readFileSync(full);
    }
  const { fx, run } = await agentRun(
    files,
    Object.fromEntries(names.map((n) => [n, null])),
    hs.url,
    "hookshot",
    4,
    "test/fixtures/payloads",
  );
  await run();
  const count = async (push: Files) => {
    fx.push(push);
    const [r0, w0] = [hs.requests.length, hs.writes()];
    const t = performance.now();
    await run();
    const ms = Math.round(performance.now() - t);
    return { requests: hs.requests.length - r0, writes: hs.writes() - w0, ms };
  };
  const oneTransform = await count({
    "hookshot/grafana.js": `${readFileSync(path.join(PROJECT, "hookshot/grafana.js"), "utf8")}\n// changed\n`,
  });
  const unrelated = await count({ "README.md": "unrelated change\n" });
  // A prelude change: every transform is checked, compared and written again.
  const prelude = await count({
    "hookshot/lib/prelude.js": `${readFileSync(path.join(PROJECT, "hookshot/lib/prelude.js"), "utf8")}\n// changed\n`,
  });

  // The old script on the same change: every transform, one PUT each (and nothing for an unrelated push,
  // which the old deploy script did not act on).
  const old = path.join(fx.dir, "old");
  cpSync(path.join(fx.pusher, "hookshot"), old, { recursive: true });
  const [r0, w0] = [hs.requests.length, hs.writes()];
  const oldStarted = performance.now();
  // Asynchronously: the test homeserver answers from this very process.
  await promisify(execFile)("bash", [path.join(PROJECT, "bench/baseline/hookshot-deploy.sh"), old], {
    env: { ...process.env, MATRIX_TOKEN: TOKEN, MATRIX_SERVER: hs.url, MATRIX_ROOM: ROOM },
  });
  const oldMs = performance.now() - oldStarted;
  const oldOne = { requests: hs.requests.length - r0, writes: hs.writes() - w0, ms: Math.round(oldMs) };
  const clobbered = hs.state.get(`${TYPE}/grafana`)?.hookId === undefined;
  await hs.close();
  fx.cleanup();
  return {
    agent: {
      oneTransformChanged: oneTransform,
      unrelatedPush: unrelated,
      preludeChanged: { ...prelude, transforms: names.length },
    },
    baseline: {
      oneTransformChanged: oldOne,
      unrelatedPush: { requests: 0, writes: 0, ms: 0 },
      // The old script pushes every transform whatever changed, the prelude included.
      preludeChanged: { ...oldOne, transforms: names.length },
    },
    baselineDroppedHookshotKeys: clobbered,
  };
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
