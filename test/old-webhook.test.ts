import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { readOldListener, renderHooksTemplate } from "../src/commands/old-webhook.js";
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

describe("the old hooks file: what an unreadable one shows", () => {
  const SECRET = "s3cret-hooks-0123456789abcdef";
  const ctx = (hooks: string) => ({
    commands: { systemctl: ["systemctl"] },
    host: { read: async () => Buffer.from(hooks) },
    run: async (argv: readonly string[]) => {
      const stdout = argv.includes("is-active")
        ? "active\n"
        : "[Service]\nExecStart=/usr/bin/webhook -hooks /etc/webhook/hooks.json -port 9000 -verbose\n";
      return { stdout, stderr: "", ran: true };
    },
  });

  it("a hooks file install cannot parse is refused with where, never with its text (the secret)", async () => {
    for (const hooks of [
      // A comma missing after the secret.
      `[{"id": "deploy", "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "${SECRET}" "parameter": {"source": "header", "name": "X-Gitea-Signature"}}}}]`,
      // A key twice on the secret's line.
      `[{"id": "deploy", "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "${SECRET}", "secret": "${SECRET}"}}}]`,
      // An unclosed quote in YAML.
      `- id: deploy\n  trigger-rule:\n    match:\n      type: payload-hmac-sha256\n      secret: "${SECRET}\n`,
    ]) {
      await assert.rejects(
        readOldListener(ctx(hooks) as unknown as Parameters<typeof readOldListener>[0], {
          enabled: true,
          active: true,
        }),
        (err: unknown) =>
          err instanceof AgentError &&
          err.code === "CONFIG_INVALID" &&
          /cannot read the old hooks file \/etc\/webhook\/hooks\.json: .*line \d+, column \d+/.test(
            err.message,
          ) &&
          !err.message.includes(SECRET.slice(0, 12)),
        hooks,
      );
    }
  });
});
