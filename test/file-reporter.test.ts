import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { PROJECT } from "./helpers/agent.js";

/**
 * The test command's reporters (package.json): a line per test file as soon as it finishes, the total at the
 * end, failures in full, the runner's exit code. Run on three small test files, the first of which ends last.
 */

const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-reporter-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const pidFile = path.join(dir, "fast.pid");
const files = {
  // Ends only once the fast file's process has exited, so the order of finishing is certain.
  "slow.test.mjs": `import { it } from "node:test";
import { existsSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
it("slow", async () => {
  while (!existsSync(${JSON.stringify(pidFile)})) await sleep(50);
  const pid = Number(readFileSync(${JSON.stringify(pidFile)}, "utf8"));
  while (alive(pid)) await sleep(50);
  await sleep(500);
});
`,
  "fast.test.mjs": `import { it } from "node:test";
import { writeFileSync } from "node:fs";
it("fast", () => { writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); });
`,
  "broken.test.mjs": `import { it } from "node:test";
import assert from "node:assert/strict";
it("compares", () => { assert.equal("found", "wanted-value-xyz"); });
`,
};
for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);

/** The test script's reporter options, read from package.json so this test follows them. */
function reporterArgs(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(PROJECT, "package.json"), "utf8")) as {
    scripts: { test: string };
  };
  const args = pkg.scripts.test.split(/\s+/).filter((a) => a.startsWith("--test-reporter"));
  assert.ok(args.length > 0, "the test script names its reporters");
  return args;
}

function runTests(args: string[], testFiles: string[]): Promise<{ code: number | null; stdout: string }> {
  // Not a child of this runner: without NODE_TEST_CONTEXT the nested runner reports as it would in CI.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--test", "--test-concurrency=3", ...args, ...testFiles], {
      cwd: PROJECT,
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout }));
  });
}

describe("the test script's reporters", () => {
  it("print each file's line when it finishes, failures in full and the total; the exit code is the runner's", async () => {
    const order = ["slow.test.mjs", "fast.test.mjs", "broken.test.mjs"].map((f) => path.join(dir, f));
    const { code, stdout } = await runTests(reporterArgs(), order);
    assert.equal(code, 1, stdout);
    const rel = (f: string) => path.relative(PROJECT, path.join(dir, f)).replaceAll(".", "\\.");
    const lineOf = (re: RegExp) => {
      const m = re.exec(stdout);
      assert.ok(m, `${re} in\n${stdout}`);
      return m.index;
    };
    const fast = lineOf(new RegExp(`^# file ok {3}${rel("fast.test.mjs")} in \\d+\\.\\d s$`, "m"));
    const slow = lineOf(new RegExp(`^# file ok {3}${rel("slow.test.mjs")} in \\d+\\.\\d s$`, "m"));
    lineOf(new RegExp(`^# file FAIL ${rel("broken.test.mjs")} in \\d+\\.\\d s$`, "m"));
    assert.ok(fast < slow, "the file that finished first is reported first, although listed second");
    assert.ok(fast < lineOf(/✔ slow/), "before the first file's own results");
    assert.match(stdout, /^# files: 3 in \d+\.\d s, 1 failed$/m);
    // The failure in full: the assertion's values, not only the file's name.
    assert.match(stdout, /wanted-value-xyz/);
  });

  it("exit 0 when every file passes", async () => {
    const { code, stdout } = await runTests(reporterArgs(), [path.join(dir, "fast.test.mjs")]);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /^# files: 1 in \d+\.\d s, 0 failed$/m);
  });
});
