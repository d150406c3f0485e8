import { JOBS, type RegisteredJob } from "../jobs/index.js";
import { HOST_OPTIONS, hostFlags, OPT } from "./options.js";
import { command, type Leaf } from "./spec.js";

/**
 * The commands that work on this host, through its manifest. Each `run` imports its module when it runs:
 * the daemon never initialises install, fleet or diff.
 */

const CONFIG = "--config /opt/matrix-config/config/lxc151.yaml";
const wait = (text: string | undefined) => Number(text ?? "0");

const run = command({
  name: "run",
  summary: "sync the clone to origin/<branch> and apply the steps whose files changed",
  options: [
    { ...OPT.dryRun, help: "describe what run would do; change nothing (fetch only)" },
    { name: "all", help: "run every step, changed or not" },
    { ...OPT.step, help: "run only this step (repeatable)" },
    { ...OPT.noFetch, help: "do not fetch; deploy the remote-tracking branch as it is" },
    OPT.wait,
    {
      name: "accept-rewrite",
      help: "take a branch whose history was rewritten (with repo.verify on, a revision that does not descend from the last one run is refused otherwise); its commits are still verified",
    },
    ...HOST_OPTIONS,
  ],
  examples: [`deploy-agent run ${CONFIG} --dry-run`, `deploy-agent run ${CONFIG} --step landing --wait 60`],
  notes: "exit 0 success or nothing to do, 1 a step or the run failed, 2 usage or configuration error",
  run: async (c) =>
    (await import("../commands/run.js")).runCommand(
      {
        ...hostFlags(c),
        dryRun: c.flag("dry-run"),
        all: c.flag("all"),
        step: c.list("step"),
        fetch: !c.flag("no-fetch"),
        waitSeconds: wait(c.string("wait")),
        acceptRewrite: c.flag("accept-rewrite"),
      },
      c.out,
    ),
});

const validate = command({
  name: "validate",
  summary: `check the manifest, its \${VAR} interpolation and every repository file it references`,
  about: `check the manifest, its \${VAR} interpolation, every repository file it references and what serve and run would refuse (the webhook secret, its mode, the clone's owner)`,
  options: HOST_OPTIONS,
  examples: [`deploy-agent validate ${CONFIG}`],
  notes: "exit 0 valid, 2 not",
  run: async (c) => (await import("../commands/validate.js")).validateCommand(hostFlags(c), c.out),
});

const status = command({
  name: "status",
  summary: "show per-step applied revision, last outcome and age",
  options: HOST_OPTIONS,
  examples: [`deploy-agent status ${CONFIG} --json`],
  run: async (c) => (await import("../commands/status.js")).statusCommand(hostFlags(c), c.out),
});

const history = command({
  name: "history",
  summary: "every run and operator command on this host, newest first",
  options: [
    OPT.limit,
    { ...OPT.step, repeat: false, help: "only runs in which this step ran" },
    ...HOST_OPTIONS,
  ],
  examples: [`deploy-agent history ${CONFIG} --limit 5 --step landing`],
  run: async (c) =>
    (await import("../commands/history.js")).historyCommand(
      { ...hostFlags(c), limit: Number(c.string("limit") ?? "20"), step: c.string("step") },
      c.out,
    ),
});

const serve = command({
  name: "serve",
  summary: "run the webhook daemon: verify Gitea pushes, deploy through a coalescing queue",
  options: [
    { ...OPT.dryRun, help: "verify and plan each push; change nothing" },
    {
      name: "listen",
      arg: "HOST:PORT",
      help: "override the manifest's listen address (also DEPLOY_AGENT_LISTEN)",
    },
    ...HOST_OPTIONS,
  ],
  examples: [`deploy-agent serve ${CONFIG}`],
  run: async (c) =>
    (await import("../commands/serve.js")).serveCommand({
      ...hostFlags(c),
      dryRun: c.flag("dry-run"),
      listen: c.string("listen"),
    }),
});

const diff = command({
  name: "diff",
  summary: "what is live against what git says, per step",
  options: [{ ...OPT.step, help: "check only this step (repeatable)" }, ...HOST_OPTIONS],
  examples: [`deploy-agent diff ${CONFIG} --step landing`],
  notes: "exit 0 in sync, 1 drifted, 2 could not tell",
  run: async (c) =>
    (await import("../commands/diff.js")).diffCommand({ ...hostFlags(c), step: c.list("step") }, c.out),
});

const suspend = command({
  name: "suspend",
  summary: "pause deploys on this host: pushes are verified and remembered, nothing deployed",
  options: [OPT.reason, ...HOST_OPTIONS],
  examples: [`deploy-agent suspend ${CONFIG} --reason "Draupnir migration"`],
  run: async (c) =>
    (await import("../commands/suspend.js")).suspendCommand(
      { ...hostFlags(c), reason: c.string("reason") },
      c.out,
    ),
});

const resume = command({
  name: "resume",
  summary: "end the pause and deploy what came meanwhile",
  options: HOST_OPTIONS,
  examples: [`deploy-agent resume ${CONFIG}`],
  run: async (c) =>
    (await import("../commands/suspend.js")).resumeCommand(
      { ...hostFlags(c), dryRun: false, all: false, step: [], fetch: true, waitSeconds: 60 },
      c.out,
    ),
});

const pin = command({
  name: "pin",
  summary: "deploy REV (an earlier revision this host ran) and hold the host there",
  about:
    "deploy REV (an earlier revision this host ran) and hold the host there: pushes are verified and remembered, not deployed, until unpin",
  args: [{ name: "REV", help: "the revision to deploy: a commit of the branch this host ran" }],
  options: [
    { ...OPT.dryRun, help: "describe what the pin would deploy; change nothing" },
    { ...OPT.reason, help: "why, shown by status, /status, fleet status and the pin's notices" },
    {
      name: "until",
      arg: "DURATION",
      help: "how long the pin is meant to last, alerted on after (90m, 24h, 2d; default 24h, at most 30d)",
    },
    { ...OPT.force, help: "a revision this host never ran, or one off the branch (it is still verified)" },
    OPT.wait,
    ...HOST_OPTIONS,
  ],
  examples: [`deploy-agent pin 3f2a1b4c5d6e ${CONFIG} --reason "v3 renders wrong" --until 2h`],
  run: async (c) =>
    (await import("../commands/pin.js")).pinCommand(
      {
        ...hostFlags(c),
        dryRun: c.flag("dry-run"),
        all: false,
        step: [],
        fetch: false,
        waitSeconds: wait(c.string("wait")),
        reason: c.string("reason"),
        until: c.string("until"),
        force: c.flag("force"),
      },
      c.args[0] ?? "",
      c.out,
    ),
});

const unpin = command({
  name: "unpin",
  summary: "end the pin and deploy the branch's tip at once",
  options: [
    { ...OPT.dryRun, help: "describe what unpinning would deploy; change nothing" },
    OPT.wait,
    ...HOST_OPTIONS,
  ],
  examples: [`deploy-agent unpin ${CONFIG}`],
  run: async (c) =>
    (await import("../commands/pin.js")).unpinCommand(
      {
        ...hostFlags(c),
        dryRun: c.flag("dry-run"),
        all: false,
        step: [],
        fetch: true,
        waitSeconds: wait(c.string("wait")),
      },
      c.out,
    ),
});

const install = command({
  name: "install",
  summary: "install this host's role: bin on PATH, unit(s), timer or cron, secret; migrate from webhook",
  options: [
    {
      name: "host",
      arg: "NAME",
      help: "the host manifest's name (required); --config defaults to /opt/matrix-config/config/NAME.yaml",
    },
    { ...OPT.dryRun, help: "show every effect; change nothing" },
    { ...OPT.force, help: "overwrite local changes" },
    ...HOST_OPTIONS,
  ],
  examples: ["deploy-agent install --host lxc151 --dry-run", "deploy-agent install --host lxc151"],
  run: async (c) =>
    (await import("../commands/install.js")).installCommand(
      { ...hostFlags(c), host: c.string("host"), dryRun: c.flag("dry-run"), force: c.flag("force") },
      c.out,
    ),
});

/** A host job (src/jobs/) as a command of its own name. */
const jobCommand = (job: RegisteredJob) =>
  command({
    name: job.command,
    summary: job.summary,
    options: [OPT.dryRun, { ...OPT.force, help: "do the work even if nothing changed" }, ...HOST_OPTIONS],
    examples: [`deploy-agent ${job.command} ${CONFIG} --dry-run`],
    run: async (c) =>
      (await import("../commands/job.js")).jobCommand(
        job,
        { ...hostFlags(c), dryRun: c.flag("dry-run"), force: c.flag("force") },
        c.out,
      ),
  });

export const HOST_COMMANDS: readonly Leaf[] = [
  run,
  validate,
  status,
  history,
  serve,
  ...JOBS.map(jobCommand),
  diff,
  suspend,
  resume,
  pin,
  unpin,
  install,
];
