import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import { appendEnv, envLine, readEnvFile } from "../src/host/env.js";
import { HOSTILE_VALUES } from "./helpers/env-values.js";

/**
 * Env values written by the agent (src/host/env.ts envLine) read back identically through dotenv, the reader the
 * agent uses, from a real file. systemd's EnvironmentFile= reads the same table in test/system/.
 */

const dir = mkdtempSync(path.join(tmpdir(), "env-write-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Values neither quoting carries identically: refused, and the error never shows them. */
const REFUSED: Record<string, string> = {
  NEWLINE: "line1\nline2",
  CR: "line1\rline2",
  TAB: "a\tb",
  NUL: "a\u0000b",
  ESC: "a\u001bb",
  BOTH_QUOTES: `it's "quoted"`,
  QUOTE_AND_BACKSLASH: "it's a \\ backslash",
  TRAILING_BACKSLASH_AND_QUOTE: "it's\\",
  // dotenv and systemd read `\'` and `\"` as an escaped quote: the closing quote would go with it.
  TRAILING_BACKSLASH: "ends-with-backslash\\",
  LONE_SURROGATE: "a\ud800b",
};

describe("env files: what the agent writes reads back as written", () => {
  it("every hostile value reads back identically through dotenv, from a real file", async () => {
    const file = path.join(dir, "hostile.env");
    writeFileSync(
      file,
      Object.entries(HOSTILE_VALUES)
        .map(([k, v]) => `${envLine(k, v)}\n`)
        .join(""),
    );
    assert.deepEqual(await readEnvFile(file), HOSTILE_VALUES);
  });

  it("refuses what it cannot carry, without showing the value", () => {
    for (const [name, value] of Object.entries(REFUSED)) {
      assert.throws(
        () => envLine(name, value),
        (err: unknown) =>
          err instanceof AgentError &&
          err.code === "ENV_VALUE_UNSAFE" &&
          err.message.startsWith(`${name} cannot be written`) &&
          !err.message.includes(value) &&
          Boolean(err.hint),
        name,
      );
    }
    assert.throws(() => envLine("NOT-A-NAME", "x"), /not a variable name/);
  });

  it("appending keeps every variable the file had, or refuses when the file would read differently", async () => {
    const before = "MATRIX_TOKEN=syt_abc\nROOM='!x:y' # comment\nNO_NEWLINE_AT_END=1";
    const next = appendEnv(before, "WEBHOOK_SECRET", HOSTILE_VALUES.SINGLE_AND_DOLLAR ?? "");
    const file = path.join(dir, "append.env");
    writeFileSync(file, next);
    assert.deepEqual(await readEnvFile(file), {
      MATRIX_TOKEN: "syt_abc",
      ROOM: "!x:y",
      NO_NEWLINE_AT_END: "1",
      WEBHOOK_SECRET: HOSTILE_VALUES.SINGLE_AND_DOLLAR,
    });
    // An unclosed quote on the last line would swallow the new line (dotenv: B = "unclosed\nWEBHOOK_SECRET=").
    const value = "#a-secret-after-a-hash";
    assert.throws(
      () => appendEnv("A=1\nB='unclosed\n", "WEBHOOK_SECRET", value),
      (err: unknown) =>
        err instanceof AgentError && err.code === "ENV_VALUE_UNSAFE" && !err.message.includes(value),
    );
  });
});
