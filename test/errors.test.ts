import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { main } from "../src/cli.js";
import { AgentError, asAgentError, logFields } from "../src/core/errors.js";

describe("error codes", () => {
  it("the unforeseen is INTERNAL: exit 1, stalled (never retried on a timer), its errno kept", () => {
    const e = asAgentError(Object.assign(new Error("boom"), { code: "EISDIR" }));
    assert.equal(e.code, "INTERNAL");
    assert.equal(e.failure, "stalled");
    assert.equal(e.exitCode, 1);
    assert.equal(e.message, "EISDIR: boom");
    const known = new AgentError("ITEMS_FAILED", "2 of 11 failed");
    assert.equal(asAgentError(known), known);
    assert.equal(known.failure, "transient");
  });
});

describe("error log fields", () => {
  it("INTERNAL keeps the stack of what was thrown; a known code does not, and every code has a hint", () => {
    function parseTheUnexpected(): never {
      throw new TypeError("cannot read properties of undefined");
    }
    let thrown: unknown;
    try {
      parseTheUnexpected();
    } catch (err) {
      thrown = err;
    }
    const internal = logFields(asAgentError(thrown));
    assert.equal(internal.code, "INTERNAL");
    assert.match(internal.stack ?? "", /at parseTheUnexpected/);
    const known = logFields(new AgentError("FETCH_FAILED", "git fetch failed"));
    assert.deepEqual(known, { code: "FETCH_FAILED", err: "git fetch failed" });
    assert.ok(new AgentError("FETCH_FAILED", "x").hint, "a default hint");
    assert.equal(new AgentError("FETCH_FAILED", "x", { hint: "precise" }).hint, "precise");
  });
});

describe("per-command options", () => {
  const run = async (...argv: string[]) => {
    let err = "";
    const code = await main(
      argv,
      () => {},
      (t) => {
        err += t;
      },
    );
    return { code, err };
  };
  for (const [command, option] of [
    ["status", "--listen=127.0.0.1:1"],
    ["validate", "--dry-run"],
    ["run", "--host=lxc151"],
    ["serve", "--all"],
    ["install", "--listen=127.0.0.1:1"],
    ["livekit-restart", "--listen=127.0.0.1:1"],
  ] as const) {
    it(`${command} refuses ${option.split("=")[0]}`, async () => {
      const res = await run(command, option, "--config", "/nonexistent.yaml");
      assert.equal(res.code, 2);
      assert.match(
        res.err,
        new RegExp(`^error USAGE: ${option.split("=")[0]} is not an option of ${command}\\n`),
      );
    });
  }
});
