import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgeKey, ageDecrypt, ageKeygen, catalogText } from "./helpers/age.js";
import { runCli } from "./helpers/agent.js";
import { needs } from "./helpers/needs.js";

/** `secret set NAME --editor`: the value written in $EDITOR, in a private file in memory, removed after. */

const skip = needs("age", ["--version"], "apt-get install -y age");

describe("secret set --editor", { skip }, () => {
  let dir: string;
  let repo: string;
  let runtime: string;
  let operator: AgeKey;
  let host: AgeKey;
  const VALUE = "editor-written-Value-0123456789";
  /** An editor that writes `value` into its file and records the file's path and its own and its directory's modes. */
  const editor = (name: string, value: string, exit = 0) => {
    const script = path.join(dir, name);
    writeFileSync(
      script,
      `#!/bin/sh\nprintf '%s\\n' "$1" "$(stat -c %a "$1")" "$(stat -c %a "$(dirname "$1")")" > ${path.join(dir, `${name}.seen`)}\nprintf '%s\\n' '${value}' > "$1"\nexit ${exit}\n`,
      { mode: 0o755 },
    );
    return script;
  };
  const seen = (name: string) =>
    readFileSync(path.join(dir, `${name}.seen`), "utf8")
      .trim()
      .split("\n");
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "secret-editor-"));
    runtime = path.join(dir, "runtime");
    mkdirSync(runtime, { mode: 0o700 });
    operator = ageKeygen(dir, "operator");
    host = ageKeygen(dir, "lxc151");
    repo = path.join(dir, "repo");
    mkdirSync(path.join(repo, "secrets"), { recursive: true });
    writeFileSync(
      path.join(repo, "secrets/secrets.yaml"),
      catalogText({ operators: [operator.recipient], hosts: { lxc151: host.recipient } }),
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("takes what the editor wrote (trailing line break dropped), from a 0600 file in a 0700 directory under XDG_RUNTIME_DIR, and removes both", async () => {
    const r = await runCli(
      ["secret", "set", "matrix-token", "--hosts", "lxc151", "--editor", "--repo", repo],
      {
        EDITOR: editor("good", VALUE),
        XDG_RUNTIME_DIR: runtime,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.includes(VALUE), false);
    const [file, fileMode, dirMode] = seen("good");
    assert.ok(file?.startsWith(`${runtime}/deploy-agent-secret-`), file);
    assert.equal(fileMode, "600");
    assert.equal(dirMode, "700");
    assert.equal(existsSync(file ?? ""), false, "the file is gone");
    assert.equal(existsSync(path.dirname(file ?? "")), false, "and its directory");
    const armored = readFileSync(path.join(repo, "secrets/matrix-token.age"), "utf8");
    assert.equal(ageDecrypt(armored, host), VALUE);
  });

  it("without XDG_RUNTIME_DIR it uses /dev/shm; an editor that fails writes nothing and leaves nothing behind", async () => {
    const before = readFileSync(path.join(repo, "secrets/matrix-token.age"), "utf8");
    const r = await runCli(["secret", "set", "matrix-token", "--editor", "--repo", repo], {
      EDITOR: editor("failing", "never-taken-value-0123456789", 3),
      XDG_RUNTIME_DIR: "",
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /error USAGE: the editor .* exited 3; nothing was written/);
    const [file] = seen("failing");
    assert.ok(file?.startsWith("/dev/shm/deploy-agent-secret-"), file);
    assert.equal(existsSync(path.dirname(file ?? "")), false, "removed even on failure");
    assert.equal(readFileSync(path.join(repo, "secrets/matrix-token.age"), "utf8"), before);
  });

  it("an editor that leaves the file empty is refused like an empty value", async () => {
    const r = await runCli(["secret", "set", "matrix-token", "--editor", "--repo", repo], {
      EDITOR: editor("empty", ""),
      XDG_RUNTIME_DIR: runtime,
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no value given for matrix-token/);
  });
});
