import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import {
  checkTransforms,
  SANDBOX_NODE_FLAGS,
  SANDBOX_OUTPUT_MAX_BYTES,
  SANDBOX_TIMEOUT_MS,
  type TransformVerdict,
} from "../src/hookshot/checks.js";
import { runTransform, transformProblem } from "../src/hookshot/transform.js";
import { PROJECT } from "./helpers/agent.js";

/**
 * The transform checks run in a child process (src/hookshot/sandbox.ts) and answer exactly what the
 * in-process checks (transform.ts) answer; the child is bounded by a timeout, an answer size and the signal.
 */

const good = 'result = { version: "v2", plain: "hi " + data.who };';
const spins = "while (true) {}";
const code = (err: unknown) => (err instanceof AgentError ? err.code : String(err));

describe("hookshot transform checks in a child process", () => {
  it("answer what the in-process checks answer, per transform and per payload", async () => {
    const jobs = [
      { src: good, payloads: ['{"who":"ana"}', "{not json", '{"who":1}'] },
      { src: "result = {", payloads: ['{"who":"x"}'] },
      { src: 'const result = { version: "v2", plain: "x" };', payloads: [] },
      { src: 'result = { plain: "x" };', payloads: ["{}"] },
    ];
    const verdicts = await checkTransforms(jobs);
    assert.deepEqual(verdicts[0], {
      problem: null,
      runs: [
        { output: await runTransform(good, { who: "ana" }) },
        {
          error: (() => {
            try {
              JSON.parse("{not json");
            } catch (e) {
              return (e as Error).message;
            }
          })() as string,
        },
        { output: { content: { plain: "hi 1" } } },
      ],
    });
    assert.deepEqual(verdicts[0]?.runs[0], { output: { content: { plain: "hi ana" } } });
    assert.deepEqual(verdicts[1], { problem: await transformProblem("result = {"), runs: [] });
    assert.match(verdicts[1]?.problem ?? "", /does not compile in hookshot's QuickJS/);
    assert.match(verdicts[2]?.problem ?? "", /declares `result`/);
    assert.deepEqual(verdicts[3], {
      problem: null,
      runs: [{ error: "Result returned from transformation didn't specify version = v2" }],
    });
  });

  it("stops a batch that outlasts the timeout, and the defaults are as documented", async () => {
    assert.equal(SANDBOX_TIMEOUT_MS, 60_000);
    assert.equal(SANDBOX_OUTPUT_MAX_BYTES, 4 * 1024 * 1024);
    // Ten runs of 500 ms each (hookshot's deadline) take 5 s; the timeout is 1 s.
    const started = Date.now();
    const err = await checkTransforms([{ src: spins, payloads: Array(10).fill("{}") }], {
      timeoutMs: 1000,
    }).catch((e: unknown) => e);
    assert.equal(code(err), "TRANSFORM_CHECK_FAILED");
    assert.match((err as Error).message, /took longer than 1000 ms/);
    assert.ok(Date.now() - started < 4000, `stopped after ${Date.now() - started} ms`);
  });

  it("takes an answer of exactly the limit and refuses one byte more", async () => {
    const jobs = [{ src: good, payloads: ['{"who":"ana"}'] }];
    const size = Buffer.byteLength(JSON.stringify(await checkTransforms(jobs)));
    assert.equal((await checkTransforms(jobs, { maxOutputBytes: size })).length, 1);
    const err = await checkTransforms(jobs, { maxOutputBytes: size - 1 }).catch((e: unknown) => e);
    assert.equal(code(err), "TRANSFORM_CHECK_FAILED");
    assert.match((err as Error).message, new RegExp(`larger than ${size - 1} bytes`));
  });

  it("kills the child when the signal aborts", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const started = Date.now();
    const err = await checkTransforms([{ src: spins, payloads: Array(10).fill("{}") }], {
      signal: ac.signal,
    }).catch((e: unknown) => e);
    assert.equal(code(err), "ABORTED");
    assert.ok(Date.now() - started < 4000, `stopped after ${Date.now() - started} ms`);
  });

  it("starts the child with Liftoff only, a flag this node accepts without a word", () => {
    // The flag is V8's: a misspelt one makes node exit 9 ("bad option") or warn on stderr.
    assert.deepEqual([...SANDBOX_NODE_FLAGS], ["--liftoff-only"]);
    const r = spawnSync(process.execPath, [...SANDBOX_NODE_FLAGS, "-e", "0"], { encoding: "utf8" });
    assert.equal(r.status, 0);
    assert.equal(r.stderr, "");
    const typo = spawnSync(process.execPath, ["--liftof-only", "-e", "0"], { encoding: "utf8" });
    assert.notEqual(typo.status === 0 && typo.stderr === "", true);
  });

  it("built, the child is one file and QuickJS's WebAssembly beside it: it needs no node_modules", (t) => {
    // Where the build puts them; copied out of the project, so that nothing resolves from node_modules.
    const dir = mkdtempSync(path.join(tmpdir(), "sandbox-built-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // package.json: what makes the child CommonJS; without it a package.json of type module in a directory
    // above (one a test left in /tmp) made it an ES module that could not start.
    for (const f of ["hookshot-sandbox.js", "emscripten-module.wasm", "package.json"]) {
      copyFileSync(path.join(PROJECT, "dist/src", f), path.join(dir, f));
    }
    const child = path.join(dir, "hookshot-sandbox.js");
    const jobs = [
      { src: good, payloads: ['{"who":"ana"}'] },
      { src: 'let result = "x";', payloads: [] },
    ];
    const r = spawnSync(process.execPath, [...SANDBOX_NODE_FLAGS, child], {
      input: JSON.stringify(jobs),
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    const [ran, declared] = JSON.parse(r.stdout) as TransformVerdict[];
    assert.deepEqual(ran, { problem: null, runs: [{ output: { content: { plain: "hi ana" } } }] });
    assert.match(declared?.problem ?? "", /declares `result`/);
    // Bad input fails it too, whatever --unhandled-rejections the unit's NODE_OPTIONS (passed on) say.
    for (const mode of ["throw", "warn", "none"]) {
      const bad = spawnSync(process.execPath, [...SANDBOX_NODE_FLAGS, child], {
        input: "{}",
        encoding: "utf8",
        env: { NODE_OPTIONS: `--unhandled-rejections=${mode}` },
      });
      assert.equal(bad.status, 1, mode);
      assert.equal(bad.stdout, "", mode);
      assert.match(bad.stderr, /TypeError: jobs is not iterable/, mode);
    }
    // Without its WebAssembly the child fails, and says so: it never answers "no problem".
    rmSync(path.join(dir, "emscripten-module.wasm"));
    const broken = spawnSync(process.execPath, [...SANDBOX_NODE_FLAGS, child], {
      input: JSON.stringify(jobs),
      encoding: "utf8",
    });
    assert.notEqual(broken.status, 0);
    assert.equal(broken.stdout, "");
    assert.match(broken.stderr, /emscripten-module\.wasm/);
  });

  it("starts no child for an empty batch", async () => {
    assert.deepEqual(await checkTransforms([], { timeoutMs: 1 }), []);
  });
});
