import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { plan } from "../src/plan/plan.js";
import { emptyState, type State } from "../src/state/state.js";
import { type StepConfig, stepSchema } from "../src/steps/index.js";
import { stateWith } from "./helpers/plan-state.js";

const A = "a".repeat(40);
const B = "b".repeat(40);
const C = "c".repeat(40);

const steps: StepConfig[] = [
  {
    kind: "file",
    name: "landing",
    source: "landing/index.html",
    targets: ["/var/www/index.html"],
    paths: ["landing/**"],
  },
  { kind: "file", name: "cinny", source: "cinny/config.json", targets: ["/var/www/html/config.json"] },
].map((s) => stepSchema.parse(s));

const tree = ["landing/index.html", "landing/img/hero.webp", "cinny/config.json", "README.md"];

const cases: {
  name: string;
  state: State;
  changes?: [string, string[] | null][];
  options?: { all?: boolean; only?: string[] };
  expect: Record<string, { run: boolean; reason: string; files?: string[] }>;
}[] = [
  {
    name: "first run: every step runs on everything it covers",
    state: emptyState("lxctest"),
    expect: {
      landing: { run: true, reason: "NeverApplied", files: ["landing/index.html", "landing/img/hero.webp"] },
      cinny: { run: true, reason: "NeverApplied", files: ["cinny/config.json"] },
    },
  },
  {
    name: "incremental: only the step whose files changed",
    state: stateWith({ landing: { applied: A }, cinny: { applied: A } }),
    changes: [[A, ["landing/img/hero.webp", "README.md"]]],
    expect: {
      landing: { run: true, reason: "Changed", files: ["landing/img/hero.webp"] },
      cinny: { run: false, reason: "NoRelevantChanges" },
    },
  },
  {
    name: "each step diffs from its own applied revision",
    state: stateWith({ landing: { applied: A }, cinny: { applied: B } }),
    changes: [
      [A, ["cinny/config.json"]],
      [B, ["landing/index.html"]],
    ],
    expect: {
      landing: { run: false, reason: "NoRelevantChanges" },
      cinny: { run: false, reason: "NoRelevantChanges" },
    },
  },
  {
    name: "a failed step runs again although nothing new changed",
    state: stateWith({ landing: { applied: C, failedAt: C }, cinny: { applied: C } }),
    expect: {
      landing: {
        run: true,
        reason: "RetryAfterFailure",
        files: ["landing/index.html", "landing/img/hero.webp"],
      },
      cinny: { run: false, reason: "UpToDate" },
    },
  },
  {
    name: "a failed step keeps its older applied revision, so its changes are seen again",
    state: stateWith({ landing: { applied: A, failedAt: B } }),
    changes: [[A, ["landing/index.html"]]],
    expect: { landing: { run: true, reason: "Changed", files: ["landing/index.html"] } },
  },
  {
    name: "an applied revision the repository no longer has (force push) runs the step",
    state: stateWith({ landing: { applied: A }, cinny: { applied: A } }),
    changes: [[A, null]],
    expect: {
      landing: { run: true, reason: "UnknownRevision" },
      cinny: { run: true, reason: "UnknownRevision", files: ["cinny/config.json"] },
    },
  },
  {
    name: "renames and deletions count through the paths git reports",
    state: stateWith({ landing: { applied: A }, cinny: { applied: A } }),
    changes: [[A, ["landing/old.html", "landing/new.html", "cinny/config.json"]]],
    expect: {
      landing: { run: true, reason: "Changed", files: ["landing/old.html", "landing/new.html"] },
      cinny: { run: true, reason: "Changed" },
    },
  },
  {
    name: "--all forces every step",
    state: stateWith({ landing: { applied: C }, cinny: { applied: C } }),
    options: { all: true },
    expect: { landing: { run: true, reason: "Forced" }, cinny: { run: true, reason: "Forced" } },
  },
  {
    name: "--step selects steps",
    state: emptyState("lxctest"),
    options: { only: ["cinny"] },
    expect: { landing: { run: false, reason: "NotSelected" }, cinny: { run: true, reason: "NeverApplied" } },
  },
];

describe("plan", () => {
  for (const c of cases) {
    it(c.name, () => {
      const actions = plan({
        steps,
        revision: C,
        tree,
        state: c.state,
        changes: new Map(c.changes ?? []),
        options: { all: c.options?.all ?? false, only: c.options?.only ?? [] },
      });
      assert.deepEqual(
        actions.map((a) => a.step.name),
        steps.map((s) => s.name),
        "actions keep manifest order",
      );
      for (const [name, want] of Object.entries(c.expect)) {
        const a = actions.find((x) => x.step.name === name);
        assert.ok(a, name);
        assert.equal(a.run, want.run, `${name}.run`);
        assert.equal(a.reason, want.reason, `${name}.reason`);
        if (want.files) assert.deepEqual(a.files, want.files, `${name}.files`);
        if (a.run) assert.ok(a.work.length > 0 && a.message.length > 0, `${name} explains its work`);
      }
    });
  }

  it("names the triggering files in its message", () => {
    const [landing] = plan({
      steps,
      revision: C,
      tree,
      state: stateWith({ landing: { applied: A } }),
      changes: new Map([[A, ["landing/index.html"]]]),
      options: { all: false, only: [] },
    });
    assert.match(landing?.message ?? "", /changed: landing\/index\.html/);
  });
});
