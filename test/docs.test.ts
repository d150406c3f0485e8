import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { ERROR_CODES } from "../src/core/errors.js";
import { PROJECT } from "./helpers/agent.js";

const readme = readFileSync(path.join(PROJECT, "README.md"), "utf8");

/** The README's row of a code, as the table renders it (Markdown-escaped hint). */
function row(code: string, info: (typeof ERROR_CODES)[keyof typeof ERROR_CODES]): string[] {
  const hint = info.hint.replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll("|", "\\|");
  return [
    `\`${code}\``,
    String(info.exit),
    info.failure + (info.configInvalid ? ", config invalid" : ""),
    hint,
  ];
}

describe("the README documents what the code does", () => {
  it("its table of every error code is the code table: each code once, with its exit, class and hint", () => {
    const section = readme.split("#### Every error code")[1]?.split(/\n#{2,4} /)[0] ?? "";
    const rows = section
      .split("\n")
      .filter((l) => /^\| `[A-Z_]+`/.test(l))
      .map((l) =>
        l
          .slice(1, -1)
          .split(/(?<!\\)\|/)
          .map((c) => c.trim()),
      );
    const expected = Object.entries(ERROR_CODES).map(([code, info]) => row(code, info));
    const table = (r: string[][]) => r.map((c) => c.join(" | ")).join("\n");
    assert.equal(
      table(rows),
      table(expected),
      `README.md "Every error code" must list the code table in order; expected rows:\n${table(expected)}`,
    );
  });
});
