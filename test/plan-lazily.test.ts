import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type PlanInput, plan, planLazily } from "../src/plan/plan.js";
import { emptyState, type State } from "../src/state/state.js";
import { type StepConfig, stepSchema } from "../src/steps/index.js";
import { stateWith } from "./helpers/plan-state.js";

/**
 * planLazily is the planner production runs (the pipeline and `plan`): the same actions as `plan`, with the
 * revision's file listing asked for only when a step runs on everything it covers, and then once.
 */

const A = "a".repeat(40);
const B = "b".repeat(40);
const C = "c".repeat(40);

// One step of each kind that plans from files, and two steps under one path (landing/index.html).
const steps: StepConfig[] = [
  {
    kind: "file",
    name: "landing",
    source: "landing/index.html",
    targets: ["/var/www/index.html"],
    paths: ["landing/**"],
  },
  { kind: "file", name: "landing-copy", source: "landing/index.html", targets: ["/srv/copy/index.html"] },
  {
    kind: "hookshot",
    name: "transforms",
    directory: "hookshot",
    prelude: "hookshot/lib/prelude.js",
    homeserver: "http://127.0.0.1:8008",
    room: "!room:example.org",
    token: "syt_test",
    transforms: { "grafana.js": null, "uptime.js": null },
  },
  {
    kind: "systemd-unit",
    name: "livekit-unit",
    source: "systemd/livekit-server.service",
    restart: "none",
  },
].map((s) => stepSchema.parse(s));

const tree = [
  "landing/index.html",
  "landing/img/hero.webp",
  "hookshot/grafana.js",
  "hookshot/uptime.js",
  "hookshot/lib/prelude.js",
  "systemd/livekit-server.service",
  "README.md",
];

const all = (rev: string) => stateWith(Object.fromEntries(steps.map((s) => [s.name, { applied: rev }])));

/** The input both planners get (planLazily without the tree) and how often the listing may be asked for. */
function input(c: Case): Omit<PlanInput, "tree"> {
  return {
    steps: c.steps ?? steps,
    revision: C,
    state: c.state,
    changes: new Map(c.changes ?? []),
    options: { all: c.options?.all ?? false, only: c.options?.only ?? [], force: c.options?.force },
  };
}

interface Case {
  name: string;
  steps?: StepConfig[];
  state: State;
  changes?: [string, string[] | null][];
  options?: { all?: boolean; only?: string[]; force?: string[] };
  /** How many times the listing is asked for: 0 when no step runs on everything it covers, else 1. */
  listings: 0 | 1;
  /** Reasons by step name, to be sure the case covers what its name says. */
  reasons: Record<string, string>;
}

const cases: Case[] = [
  {
    name: "no steps",
    steps: [],
    state: emptyState("lxctest"),
    listings: 0,
    reasons: {},
  },
  {
    name: "first run with empty state: every step on everything it covers",
    state: emptyState("lxctest"),
    listings: 1,
    reasons: {
      landing: "NeverApplied",
      "landing-copy": "NeverApplied",
      transforms: "NeverApplied",
      "livekit-unit": "NeverApplied",
    },
  },
  {
    name: "no changed paths since every step's revision",
    state: all(A),
    changes: [[A, []]],
    listings: 0,
    reasons: {
      landing: "NoRelevantChanges",
      "landing-copy": "NoRelevantChanges",
      transforms: "NoRelevantChanges",
      "livekit-unit": "NoRelevantChanges",
    },
  },
  {
    name: "every step already at the revision",
    state: all(C),
    listings: 0,
    reasons: {
      landing: "UpToDate",
      "landing-copy": "UpToDate",
      transforms: "UpToDate",
      "livekit-unit": "UpToDate",
    },
  },
  {
    name: "a path under two steps runs both, on that path only",
    state: all(A),
    changes: [[A, ["landing/index.html", "README.md"]]],
    listings: 0,
    reasons: {
      landing: "Changed",
      "landing-copy": "Changed",
      transforms: "NoRelevantChanges",
      "livekit-unit": "NoRelevantChanges",
    },
  },
  {
    name: "the hookshot prelude changed: the transforms step on the prelude",
    state: all(A),
    changes: [[A, ["hookshot/lib/prelude.js"]]],
    listings: 0,
    reasons: {
      landing: "NoRelevantChanges",
      "landing-copy": "NoRelevantChanges",
      transforms: "Changed",
      "livekit-unit": "NoRelevantChanges",
    },
  },
  {
    name: "steps at different revisions, one never applied: the listing once, for that one",
    state: stateWith({ landing: { applied: A }, "landing-copy": { applied: B }, transforms: { applied: A } }),
    changes: [
      [A, ["hookshot/grafana.js", "landing/img/hero.webp"]],
      [B, ["README.md"]],
    ],
    listings: 1,
    reasons: {
      landing: "Changed",
      "landing-copy": "NoRelevantChanges",
      transforms: "Changed",
      "livekit-unit": "NeverApplied",
    },
  },
  {
    name: "a failed step is retried on everything it covers",
    state: stateWith({ landing: { applied: C, failedAt: C }, "landing-copy": { applied: C } }),
    listings: 1,
    reasons: { landing: "RetryAfterFailure", "landing-copy": "UpToDate" },
  },
  {
    name: "a failed step keeps its older revision: its changes are seen again without a listing",
    state: stateWith({
      landing: { applied: A, failedAt: B },
      "landing-copy": { applied: A },
      transforms: { applied: A },
      "livekit-unit": { applied: A },
    }),
    changes: [[A, ["landing/index.html"]]],
    listings: 0,
    reasons: { landing: "Changed", "landing-copy": "Changed", transforms: "NoRelevantChanges" },
  },
  {
    name: "an applied revision the repository no longer has",
    state: all(A),
    changes: [[A, null]],
    listings: 1,
    reasons: { landing: "UnknownRevision", "livekit-unit": "UnknownRevision" },
  },
  {
    name: "--all",
    state: all(A),
    changes: [[A, []]],
    options: { all: true },
    listings: 1,
    reasons: { landing: "Forced", transforms: "Forced" },
  },
  {
    name: "drift forces one step (selfHeal)",
    state: all(A),
    changes: [[A, []]],
    options: { force: ["livekit-unit"] },
    listings: 1,
    reasons: { landing: "NoRelevantChanges", "livekit-unit": "Forced" },
  },
  {
    name: "--step leaves out a never-applied step: no listing for it",
    state: stateWith({ transforms: { applied: A } }),
    changes: [[A, ["hookshot/uptime.js"]]],
    options: { only: ["transforms"] },
    listings: 0,
    reasons: {
      landing: "NotSelected",
      "landing-copy": "NotSelected",
      transforms: "Changed",
      "livekit-unit": "NotSelected",
    },
  },
];

describe("planLazily", () => {
  for (const c of cases) {
    it(`${c.name}: the same actions as plan; listed ${c.listings} time(s)`, async () => {
      let calls = 0;
      const lazy = await planLazily(input(c), async () => {
        calls++;
        return tree;
      });
      const eager = plan({ ...input(c), tree });
      assert.deepEqual(lazy, eager);
      assert.equal(calls, c.listings, "listings");
      for (const [name, reason] of Object.entries(c.reasons)) {
        assert.equal(lazy.find((a) => a.step.name === name)?.reason, reason, name);
      }
    });
  }

  const named = (name: string) => cases.find((c) => c.name.startsWith(name)) as Case;

  it("a listing that fails is not seen when no step needs it, and rejects the plan when one does", async () => {
    const broken = async (): Promise<readonly string[]> => {
      throw new Error("listing failed");
    };
    const changed = await planLazily(input(named("a path under two steps")), broken);
    assert.deepEqual(
      changed.filter((a) => a.run).map((a) => a.step.name),
      ["landing", "landing-copy"],
    );
    await assert.rejects(planLazily(input(named("first run")), broken), /listing failed/);
  });

  it("plans a never-applied step's work from the files the listing gives, not from an empty list", async () => {
    const actions = await planLazily(input(named("first run")), async () => ["hookshot/grafana.js", "x"]);
    const transforms = actions.find((a) => a.step.name === "transforms");
    assert.deepEqual(transforms?.files, ["hookshot/grafana.js"]);
    assert.deepEqual(transforms?.work, [
      'sync hookshot/grafana.js -> connection "grafana" in !room:example.org',
    ]);
  });
});
