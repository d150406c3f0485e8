import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AgentError } from "./core/errors.js";
import { sanitize } from "./core/redact.js";
import { JOBS, jobByCommand } from "./jobs/index.js";

const USAGE = `usage: deploy-agent <command> [options]

commands:
  run        sync the clone to origin/<branch> and apply the steps whose files changed
  validate   check the manifest, its \${VAR} interpolation and every repository file it references
  status     show per-step applied revision, last outcome and age
  history    every run and operator command on this host, newest first (--limit N, default 20; --step NAME;
             --json)
  serve      run the webhook daemon: verify Gitea pushes, deploy through a coalescing queue
${JOBS.map((j) => `  ${j.command.padEnd(16)} ${j.summary}`).join("\n")}
  diff       what is live against what git says, per step (--step NAME; exit 0 in sync, 1 drifted, 2 unknown)
  fleet status     every host of config/*.yaml: deployed commit, behind, last run, failing step (--json, --token-file F)
  fleet history    the fleet's last runs merged by time (--limit N per host, default 20; --json, --token-file F)
  fleet wait REV   wait until every host runs REV (--timeout S, default 300); exit 1 naming the laggards
  plan       what each host would do if --to were pushed onto hosts running --from, and every check that
             needs no host (--from REV required, --to REV default HEAD, --host NAME | --all, --json | --markdown,
             --post-gitea: comment and statuses on the pull request; exit 0 clean, 1 a check failed)
  suspend    pause deploys on this host (--reason TEXT): pushes are verified and remembered, nothing deployed
  resume     end the pause and deploy what came meanwhile
  pin REV    deploy REV (an earlier revision this host ran) and hold the host there: pushes are verified and
             remembered, not deployed (--reason TEXT, --until 24h, --dry-run; --force: a revision it never ran)
  unpin      end the pin and deploy the branch's tip at once
  secret set NAME   encrypt a value from stdin (or typed, not echoed; --editor: written in $EDITOR) to its hosts
             and the operators (--hosts a,b)
  secret list       secrets of secrets/secrets.yaml: hosts, recipients, age (never values); exit 1 if one needs rekey
  secret rekey [NAME]  re-encrypt to the catalog's recipients after a host was added or replaced (--identity F)
  secret check      on the host: decrypt each secret step's Matrix token and check whoami and power (--step NAME)
  secret rotate-webhook  on the host: a next webhook secret accepted beside the current one, given to Gitea with
             --hook URL (GITEA_TOKEN or --token-file F); --finish makes it the current one (--force: unconfirmed)
  install    install this host's role: bin on PATH, unit(s), timer or cron, secret; migrate from webhook
             (--host lxcNNN required; --dry-run shows every effect; --force overwrites local changes)

options:
  --config FILE      host manifest (config/<host>.yaml); default $DEPLOY_AGENT_CONFIG
  --dry-run          describe what run would do; change nothing (fetch only)
  --all              run every step, changed or not
  --step NAME        run only this step (repeatable); history: only runs in which this step ran
  --limit N          history: at most N records (default 20, at most 10000)
  --json             print a machine-readable document instead of text
  --root DIR         treat DIR as / for every host path of the manifest (staging, tests, demos)
  --repo DIR         the config repo clone (default: the manifest's repo.path)
  --state-dir DIR    where state.json and the lock live (default: the manifest's stateDir)
  --env-file FILE    dotenv file for \${VAR} (default: the manifest's envFile)
  --no-fetch         do not fetch; deploy the remote-tracking branch as it is
  --accept-rewrite   run: take a branch whose history was rewritten (with repo.verify on, a revision that does
                     not descend from the last one run is refused otherwise); its commits are still verified
  --wait SECONDS     wait this long for another run's lock (default 0: fail at once)
  --log-level LEVEL  trace|debug|info|warn|error (default: the manifest's log.level)
  --listen HOST:PORT serve: override the manifest's listen address (also DEPLOY_AGENT_LISTEN)
  --host NAME        install: the host manifest's name; --config defaults to /opt/matrix-config/config/NAME.yaml
  -h, --help         this text
  --version          print the version

exit codes: 0 success, 1 a step or the run failed, 2 usage or configuration error
`;

type Out = (text: string) => void;

// Each command's module initialises when it runs: the daemon never sets up install, fleet or diff.
const commands = {
  run: () => import("./commands/run.js"),
  validate: () => import("./commands/validate.js"),
  status: () => import("./commands/status.js"),
  history: () => import("./commands/history.js"),
  diff: () => import("./commands/diff.js"),
  suspend: () => import("./commands/suspend.js"),
  install: () => import("./commands/install.js"),
  serve: () => import("./commands/serve.js"),
  job: () => import("./commands/job.js"),
  fleet: () => import("./commands/fleet.js"),
  pin: () => import("./commands/pin.js"),
  plan: () => import("./commands/plan.js"),
  secret: () => import("./commands/secret.js"),
  secretCheck: () => import("./commands/secret-check.js"),
  secretRotate: () => import("./commands/secret-rotate.js"),
};

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Which options each command takes; any other is a usage error, never silently ignored. */
const COMMON = ["config", "root", "repo", "state-dir", "env-file", "json", "log-level"];
const OPTIONS_OF: Record<string, string[]> = {
  run: [...COMMON, "dry-run", "all", "step", "no-fetch", "wait", "accept-rewrite"],
  validate: COMMON,
  status: COMMON,
  history: [...COMMON, "limit", "step"],
  serve: [...COMMON, "dry-run", "listen"],
  install: [...COMMON, "host", "dry-run", "force"],
  suspend: [...COMMON, "reason"],
  pin: [...COMMON, "dry-run", "reason", "until", "force", "wait"],
  unpin: [...COMMON, "dry-run", "wait"],
  diff: [...COMMON, "step"],
  resume: COMMON,
  ...Object.fromEntries(JOBS.map((j) => [j.command, [...COMMON, "dry-run", "force"]])),
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** Parses argv and runs one command. Never exits the process: returns the exit code. */
export async function main(argv: string[], out: Out, err: Out): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    err(`error USAGE: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  if (v.help) {
    out(USAGE);
    return 0;
  }
  if (v.version) {
    out(`${version()}\n`);
    return 0;
  }
  const [command, ...given] = positionals;
  // pin takes its revision as an argument; every other host command takes none.
  const pinned = command === "pin" ? given[0] : undefined;
  const extra = command === "pin" ? given.slice(1) : given;
  if (command === "pin" && pinned === undefined) {
    err(`error USAGE: pin needs a revision: deploy-agent pin <revision> [--reason TEXT] [--until 24h]\n`);
    return 2;
  }
  if (command === "fleet") return fleet(extra, v, out, err);
  if (command === "plan") return plan(extra, v, out, err);
  if (command === "secret") return secret(extra, v, out, err);
  if (!command || extra.length) {
    err(`error USAGE: ${command ? `unexpected argument ${extra[0]}` : "no command given"}\n\n${USAGE}`);
    return 2;
  }
  const allowed = OPTIONS_OF[command];
  const foreign = allowed && Object.keys(v).find((k) => !allowed.includes(k));
  if (foreign) {
    err(`error USAGE: --${foreign} is not an option of ${command}\n\n${USAGE}`);
    return 2;
  }
  const wait = Number(v.wait ?? "0");
  if (!Number.isFinite(wait) || wait < 0) {
    err("error USAGE: --wait takes a number of seconds\n");
    return 2;
  }
  const logLevel = v["log-level"];
  if (logLevel !== undefined && !LOG_LEVELS.includes(logLevel)) {
    err(`error USAGE: --log-level takes ${LOG_LEVELS.join("|")}, not "${logLevel}"\n`);
    return 2;
  }
  const common = {
    config: v.config,
    root: v.root,
    repo: v.repo,
    stateDir: v["state-dir"],
    envFile: v["env-file"],
    json: v.json ?? false,
    logLevel,
  };
  try {
    switch (command) {
      case "run":
        return await (await commands.run()).runCommand(
          {
            ...common,
            dryRun: v["dry-run"] ?? false,
            all: v.all ?? false,
            step: v.step ?? [],
            fetch: !v["no-fetch"],
            waitSeconds: wait,
            acceptRewrite: v["accept-rewrite"] ?? false,
          },
          out,
        );
      case "validate":
        return await (await commands.validate()).validateCommand(common, out);
      case "status":
        return await (await commands.status()).statusCommand(common, out);
      case "history": {
        const limit = historyLimit(v.limit);
        if (v.step && v.step.length > 1) throw new AgentError("USAGE", "history takes one --step");
        return await (await commands.history()).historyCommand({ ...common, limit, step: v.step?.[0] }, out);
      }
      case "diff":
        return await (await commands.diff()).diffCommand({ ...common, step: v.step ?? [] }, out);
      case "suspend":
        return await (await commands.suspend()).suspendCommand({ ...common, reason: v.reason }, out);
      case "resume":
        return await (await commands.suspend()).resumeCommand(
          { ...common, dryRun: false, all: false, step: [], fetch: true, waitSeconds: 60 },
          out,
        );
      case "pin":
        return await (await commands.pin()).pinCommand(
          {
            ...common,
            dryRun: v["dry-run"] ?? false,
            all: false,
            step: [],
            fetch: false,
            waitSeconds: wait,
            reason: v.reason,
            until: v.until,
            force: v.force ?? false,
          },
          pinned ?? "",
          out,
        );
      case "unpin":
        return await (await commands.pin()).unpinCommand(
          { ...common, dryRun: v["dry-run"] ?? false, all: false, step: [], fetch: true, waitSeconds: wait },
          out,
        );
      case "install":
        return await (await commands.install()).installCommand(
          { ...common, host: v.host, dryRun: v["dry-run"] ?? false, force: v.force ?? false },
          out,
        );
      case "serve":
        return await (await commands.serve()).serveCommand({
          ...common,
          dryRun: v["dry-run"] ?? false,
          listen: v.listen,
        });
      default: {
        const job = jobByCommand(command);
        if (job)
          return await (await commands.job()).jobCommand(
            job,
            { ...common, dryRun: v["dry-run"] ?? false, force: v.force ?? false },
            out,
          );
        err(`error USAGE: unknown command "${command}"\n\n${USAGE}`);
        return 2;
      }
    }
  } catch (e) {
    return reportError(e, err);
  }
}

/** The most records `history --limit` and `fleet history --limit` take. */
const MAX_HISTORY_LIMIT = 10_000;

/** `--limit N`: a whole number from 1 (default 20); anything else is a usage error, never a silent default. */
function historyLimit(given: string | undefined): number {
  const limit = given === undefined ? 20 : /^\d+$/.test(given) ? Number(given) : Number.NaN;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT)
    throw new AgentError(
      "USAGE",
      `--limit takes a whole number from 1 to ${MAX_HISTORY_LIMIT}, not "${given}"`,
    );
  return limit;
}

/** `fleet status`, `fleet history` and `fleet wait <rev>`: subcommands with their own few options. */
async function fleet(
  args: string[],
  v: ReturnType<typeof parse>["values"],
  out: Out,
  err: Out,
): Promise<number> {
  const [sub, rev, ...rest] = args;
  const own = sub === "history" ? ["limit"] : ["timeout"];
  const foreign = Object.keys(v).find((k) => !["repo", "json", "token-file", ...own].includes(k));
  if (
    foreign ||
    rest.length ||
    ((sub === "status" || sub === "history") && rev) ||
    (sub === "wait" && !rev) ||
    (sub !== "status" && sub !== "wait" && sub !== "history")
  ) {
    err(
      `error USAGE: ${foreign ? `--${foreign} is not an option of fleet ${sub ?? ""}`.trimEnd() : "fleet status | fleet history [--limit N] | fleet wait <rev> [--timeout S]"}\n`,
    );
    return 2;
  }
  const timeoutSeconds = Number(v.timeout ?? "300");
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
    err("error USAGE: --timeout takes a number of seconds\n");
    return 2;
  }
  const flags = { repo: v.repo, json: v.json ?? false, tokenFile: v["token-file"], timeoutSeconds };
  try {
    const fleet = await commands.fleet();
    if (sub === "history")
      return await fleet.fleetHistoryCommand({ ...flags, limit: historyLimit(v.limit) }, out);
    return sub === "status"
      ? await fleet.fleetStatusCommand(flags, out)
      : await fleet.fleetWaitCommand(flags, rev ?? "", out);
  } catch (e) {
    return reportError(e, err);
  }
}

/** `secret set|list|rekey` on the operator's machine, `secret check` on a host. */
async function secret(
  args: string[],
  v: ReturnType<typeof parse>["values"],
  out: Out,
  err: Out,
): Promise<number> {
  const [sub, name, ...rest] = args;
  const allowed: Record<string, string[]> = {
    set: ["repo", "hosts", "raw", "editor"],
    list: ["repo", "json"],
    rekey: ["repo", "identity"],
    check: [...COMMON, "step", "no-fetch"],
    "rotate-webhook": [...COMMON, "finish", "force", "hook", "token-file"],
  };
  const options = sub ? allowed[sub] : undefined;
  const foreign = options && Object.keys(v).find((k) => !options.includes(k));
  const arity = sub === "set" ? name !== undefined : sub === "rekey" || name === undefined;
  if (!options || foreign || rest.length || !arity) {
    err(
      `error USAGE: ${foreign ? `--${foreign} is not an option of secret ${sub}` : "secret set NAME [--hosts a,b] [--editor] | secret list | secret rekey [NAME] [--identity F] | secret check [--step NAME] | secret rotate-webhook [--hook URL] [--finish] [--force]"}\n`,
    );
    return 2;
  }
  const flags = {
    repo: v.repo,
    json: v.json ?? false,
    hosts: v.hosts,
    identity: v.identity,
    raw: v.raw ?? false,
    editor: v.editor ?? false,
  };
  try {
    if (sub === "rotate-webhook") {
      return await (await commands.secretRotate()).rotateWebhookCommand(
        {
          config: v.config,
          root: v.root,
          repo: v.repo,
          stateDir: v["state-dir"],
          envFile: v["env-file"],
          json: v.json ?? false,
          logLevel: v["log-level"],
          finish: v.finish ?? false,
          force: v.force ?? false,
          hook: v.hook,
          tokenFile: v["token-file"],
        },
        out,
      );
    }
    if (sub === "check") {
      return await (await commands.secretCheck()).secretCheckCommand(
        {
          config: v.config,
          root: v.root,
          repo: v.repo,
          stateDir: v["state-dir"],
          envFile: v["env-file"],
          json: v.json ?? false,
          logLevel: v["log-level"],
          step: v.step ?? [],
          fetch: !v["no-fetch"],
        },
        out,
      );
    }
    const m = await commands.secret();
    if (sub === "set") return await m.secretSetCommand(flags, name, process.stdin, out, err);
    if (sub === "list") return await m.secretListCommand(flags, out);
    return await m.secretRekeyCommand(flags, name, out);
  } catch (e) {
    return reportError(e, err);
  }
}

/** `plan`: a clone and two revisions; no manifest, root or env file (it needs no host). */
async function plan(
  args: string[],
  v: ReturnType<typeof parse>["values"],
  out: Out,
  err: Out,
): Promise<number> {
  const own = ["repo", "from", "to", "host", "all", "json", "markdown", "post-gitea"];
  const foreign = Object.keys(v).find((k) => !own.includes(k));
  if (foreign || args.length) {
    err(
      `error USAGE: ${foreign ? `--${foreign} is not an option of plan` : `unexpected argument ${args[0]}`}\n\n${USAGE}`,
    );
    return 2;
  }
  try {
    return await (await commands.plan()).planCommand(
      {
        repo: v.repo,
        from: v.from,
        to: v.to,
        host: v.host,
        all: v.all ?? false,
        json: v.json ?? false,
        markdown: v.markdown ?? false,
        postGitea: v["post-gitea"] ?? false,
      },
      out,
      err,
    );
  } catch (e) {
    return reportError(e, err);
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string" },
      "dry-run": { type: "boolean" },
      all: { type: "boolean" },
      step: { type: "string", multiple: true },
      json: { type: "boolean" },
      root: { type: "string" },
      repo: { type: "string" },
      "state-dir": { type: "string" },
      "env-file": { type: "string" },
      "no-fetch": { type: "boolean" },
      "accept-rewrite": { type: "boolean" },
      wait: { type: "string" },
      "log-level": { type: "string" },
      listen: { type: "string" },
      force: { type: "boolean" },
      host: { type: "string" },
      reason: { type: "string" },
      until: { type: "string" },
      "token-file": { type: "string" },
      timeout: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      markdown: { type: "boolean" },
      "post-gitea": { type: "boolean" },
      limit: { type: "string" },
      hosts: { type: "string" },
      identity: { type: "string" },
      raw: { type: "boolean" },
      editor: { type: "boolean" },
      finish: { type: "boolean" },
      hook: { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
  });
}

/** The one place errors become output and exit codes. */
function reportError(e: unknown, err: Out): number {
  if (e instanceof AgentError) {
    err(`error ${e.code}: ${sanitize(e.message)}\n${e.hint ? `hint: ${e.hint}\n` : ""}`);
    return e.exitCode;
  }
  err(`error INTERNAL: ${sanitize(e instanceof Error ? (e.stack ?? e.message) : String(e))}\n`);
  return 1;
}
