import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderHooksTemplate } from "../src/commands/old-webhook.js";
import { AgentError } from "../src/core/errors.js";

/**
 * webhook -template's getenv, as install renders it (the whole migration runs through the CLI in
 * test/install.test.ts and under systemd in test/system/): every spelling Go's text/template accepts for
 * `getenv "X"`, and the refusals.
 */

const env = new Map([
  ["HOOK_SECRET", "s3cret-0123456789"],
  ["ODD", `a"b#c $d`],
  ["EMPTY", ""],
]);
const render = (text: string) => renderHooksTemplate(text, env, "/etc/webhook/hooks.json");

describe("webhook -template: getenv resolved as webhook renders it", () => {
  it("every spelling of getenv gives the variable's value", () => {
    for (const action of [
      '{{ getenv "HOOK_SECRET" }}',
      '{{getenv "HOOK_SECRET"}}',
      '{{   getenv   "HOOK_SECRET"   }}',
      "{{ getenv `HOOK_SECRET` }}",
      '{{ getenv "HOOK_SECRET" | js }}',
      '{{ getenv "HOOK_SECRET"|js }}',
    ]) {
      assert.equal(render(`secret: "${action}"`), 'secret: "s3cret-0123456789"', action);
    }
  });

  it("trim markers remove the whitespace on their side, as Go's do", () => {
    assert.equal(render('secret: " \n {{- getenv "HOOK_SECRET" -}} \n "'), 'secret: "s3cret-0123456789"');
    assert.equal(render('a {{- getenv "HOOK_SECRET" }} b'), "as3cret-0123456789 b");
  });

  it("every action in the file is rendered; text outside actions is kept byte for byte", () => {
    assert.equal(
      render('x: {{ getenv "ODD" }}\ny: {{ getenv "HOOK_SECRET" }}\n'),
      'x: a"b#c $d\ny: s3cret-0123456789\n',
    );
  });

  it("refuses what it cannot reproduce, never showing a value", () => {
    for (const [text, why] of [
      ["{{ .Env.X }}", /template action install cannot resolve/],
      ['{{ getenv "NOPE" }}', /reads NOPE with getenv, but webhook\.service's environment does not set it/],
      ['{{ getenv "EMPTY" }}', /sets it empty/],
      ['{{ getenv "ODD" | js }}', /pipes ODD through js/],
      ['{{ getenv "HOOK_SECRET" | printf "%s" }}', /cannot resolve/],
      ['{{/* getenv "HOOK_SECRET" */}}', /cannot resolve/],
      ['{{ getenv "HOOK\\u005fSECRET" }}', /cannot resolve/],
      ['{{-getenv "HOOK_SECRET"}}', /cannot resolve/],
    ] as const) {
      assert.throws(
        () => render(`secret: "${text}"`),
        (err: unknown) =>
          err instanceof AgentError &&
          err.code === "HOOKS_TEMPLATE_UNRESOLVED" &&
          why.test(err.message) &&
          !err.message.includes("s3cret") &&
          !err.message.includes('a"b#c'),
        text,
      );
    }
  });
});
