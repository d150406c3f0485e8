import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/** What the agent says is what happened: the real CLI's output after real runs. */

let fx: Fixture;
let root: string;
let stateDir: string;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": `${"<p>line</p>\n".repeat(40)}` });
  root = path.join(fx.dir, "root");
  stateDir = path.join(fx.dir, "state");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
});
afterEach(() => fx.cleanup());

describe("a failed step, as the CLI says it", () => {
  it("its error and hint come first, its long diff after; the retry says the last attempt failed, not that it was cut off", async () => {
    const manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          reload: [["sh", "-c", "echo reload refused >&2; exit 3"]],
        },
      ],
    });
    const args = runArgs(manifest, fx.clone, root, stateDir);
    const first = await runCli(args);
    assert.equal(first.code, 1);
    const lines = first.stdout.split("\n");
    const failed = lines.findIndex((l) => l.startsWith("[FAILED] landing"));
    assert.ok(failed >= 0, first.stdout);
    assert.match(lines[failed + 1] ?? "", /^ {4}error COMMAND_FAILED: .*reload refused/);
    assert.match(lines[failed + 2] ?? "", /^ {4}hint: \S/);
    const diff = lines.findIndex((l) => /^ {4}write \/var\/www\/index\.html/.test(l));
    assert.ok(diff > failed + 2, "the diff comes after the error and its hint");

    const again = await runCli(args);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /the last attempt failed: its follow-up actions run again/);
    assert.doesNotMatch(again.stdout, /did not finish/);
  });
});
