import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import { loadManifest } from "../src/manifest/load.js";

const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-manifest-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const HEAD = "version: 1\nhost: lxctest\nlisten: { port: 9000 }\n";
const FILE_STEP =
  "  - name: page\n    kind: file\n    source: landing/index.html\n    targets: [/var/www/index.html]\n";

async function loadText(text: string, env: Record<string, string> = {}, envFile?: string) {
  const file = path.join(dir, `m-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return { file, result: loadManifest(file, { processEnv: env, envFile }) };
}

async function rejection(
  text: string,
  env: Record<string, string> = {},
): Promise<{ file: string; err: AgentError }> {
  const { file, result } = await loadText(text, env);
  const err = await result.then(
    () => assert.fail("manifest was accepted"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof AgentError);
  return { file, err };
}

describe("manifest loading", () => {
  it("accepts a valid manifest and fills defaults", async () => {
    const { result } = await loadText(`${HEAD}steps:\n${FILE_STEP}`);
    const { manifest } = await result;
    assert.equal(manifest.repo.path, "/opt/matrix-config");
    assert.equal(manifest.repo.branch, "main");
    assert.equal(manifest.stateDir, "/var/lib/deploy-agent");
    assert.equal(manifest.listen.host, "0.0.0.0");
    assert.equal(manifest.steps[0]?.timeoutSeconds, 120);
  });

  const bad: [string, string, RegExp][] = [
    ["unknown top-level key", `${HEAD}stepz: []\nsteps:\n${FILE_STEP}`, /: stepz: unknown key/],
    [
      "unknown step key (a typo must not disable a step)",
      `${HEAD}steps:\n${FILE_STEP}    reloads: [[nginx]]\n`,
      /: steps\.0\.reloads: unknown key/,
    ],
    [
      "unknown step kind",
      `${HEAD}steps:\n  - name: x\n    kind: ftp\n`,
      /: steps\.0\.kind: unknown step kind/,
    ],
    [
      "unquoted octal mode",
      `${HEAD}steps:\n${FILE_STEP}    mode: 0755\n`,
      /steps\.0\.mode: must be a quoted octal string/,
    ],
    [
      "relative target",
      `${HEAD}steps:\n  - name: x\n    kind: file\n    source: a\n    targets: [var/www]\n`,
      /steps\.0\.targets\.0: must be an absolute path/,
    ],
    [
      "source climbing out of the repo",
      `${HEAD}steps:\n  - name: x\n    kind: file\n    source: ../etc/passwd\n    targets: [/a]\n`,
      /steps\.0\.source: must be a normalized path relative/,
    ],
    [
      "duplicate step names",
      `${HEAD}steps:\n${FILE_STEP}${FILE_STEP}`,
      /steps\.1\.name: duplicate step name "page"/,
    ],
    [
      "port out of range",
      `version: 1\nhost: lxctest\nlisten: { port: 70000 }\nsteps:\n${FILE_STEP}`,
      /listen\.port: /,
    ],
    ["missing steps", HEAD, /steps: /],
    [
      "a remote name git would read as an option",
      `${HEAD}repo: { remote: "--upload-pack=touch /tmp/x" }\nsteps:\n${FILE_STEP}`,
      /repo\.remote: must be a git remote name/,
    ],
  ];
  for (const [name, text, pattern] of bad) {
    it(`rejects ${name}, naming the file and the key path`, async () => {
      const { file, err } = await rejection(text);
      assert.equal(err.code, "CONFIG_INVALID");
      assert.equal(err.exitCode, 2);
      assert.ok(err.message.startsWith(`${file}: `), err.message);
      assert.match(err.message, pattern);
    });
  }

  it("reports YAML syntax errors with line and column", async () => {
    const { file, err } = await rejection(`${HEAD}steps:\n  - name: [unclosed\n`);
    assert.equal(err.code, "CONFIG_INVALID");
    assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: `));
  });

  it("interpolates ${VAR} from the env file, with the process environment winning", async () => {
    const envFile = path.join(dir, "deploy.env");
    writeFileSync(envFile, "TARGET_DIR=/from-file\nNAME=page\n");
    const text = `${HEAD}steps:\n  - name: \${NAME}\n    kind: file\n    source: a\n    targets: ["\${TARGET_DIR}/index.html", "/cost/$$5"]\n`;
    const { result } = await loadText(text, { TARGET_DIR: "/from-process" }, envFile);
    const { manifest } = await result;
    const step = manifest.steps[0];
    assert.equal(step?.name, "page");
    assert.deepEqual(step?.kind === "file" && step.targets, ["/from-process/index.html", "/cost/$5"]);
  });

  it("lists every unset variable with its key path", async () => {
    const text = `${HEAD}steps:\n  - name: page\n    kind: file\n    source: \${SRC}\n    targets: ["\${DIR}/x"]\n`;
    const { file, err } = await rejection(text);
    assert.equal(err.code, "ENV_MISSING");
    assert.match(
      err.message,
      new RegExp(`${path.basename(file)}: steps\\.0\\.source: \\$\\{SRC\\} is not set`),
    );
    assert.match(err.message, /steps\.0\.targets\.0: \$\{DIR\} is not set/);
  });

  it("fails clearly when the named env file is missing", async () => {
    const { result } = await loadText(`${HEAD}envFile: /nonexistent/deploy.env\nsteps:\n${FILE_STEP}`);
    await assert.rejects(
      result,
      (e: AgentError) => e.code === "ENV_MISSING" && /\/nonexistent\/deploy\.env/.test(e.message),
    );
  });

  it("loads every host manifest in config/ against a demo environment", async () => {
    for (const host of ["lxc106", "lxc139"]) {
      const { manifest } = await loadManifest(path.resolve("config", `${host}.yaml`), { processEnv: {} });
      assert.equal(manifest.host, host);
      assert.equal(manifest.listen.port, 9000);
      assert.equal(manifest.repo.path, "/opt/matrix-config");
      assert.equal(manifest.log.file, "/var/log/matrix-deploy.log");
    }
  });
});
