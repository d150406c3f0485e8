import { HOST_OPTIONS, hostFlags, OPT } from "./options.js";
import { type Call, command, group } from "./spec.js";

/**
 * The commands that work from a clone of the config repository (the operator's machine, CI): the fleet,
 * the plan of a pull request and the secrets; and the two secret commands that run on a host.
 */

const clone = { ...OPT.repo, help: "the config repository's clone (default: the current directory)" };
const fleetOptions = [clone, OPT.json, OPT.tokenFile] as const;

const fleetFlags = (c: Call<(typeof fleetOptions)[number]["name"]>) => ({
  repo: c.string("repo"),
  json: c.flag("json"),
  tokenFile: c.string("token-file"),
  timeoutSeconds: 300,
});

export const fleet = group({
  name: "fleet",
  summary: "every host of config/*.yaml from one command: status, history, wait for a revision",
  subcommands: [
    command({
      name: "status",
      summary: "every host: deployed commit, behind, last run, failing step",
      options: fleetOptions,
      examples: ["deploy-agent fleet status --repo /opt/matrix-config"],
      run: async (c) => (await import("../commands/fleet.js")).fleetStatusCommand(fleetFlags(c), c.out),
    }),
    command({
      name: "history",
      summary: "the fleet's last runs merged by time",
      options: [
        { ...OPT.limit, help: "at most N records from each host (default 20, 1 to 10000)" },
        ...fleetOptions,
      ],
      examples: ["deploy-agent fleet history --limit 50"],
      run: async (c) =>
        (await import("../commands/fleet.js")).fleetHistoryCommand(
          { ...fleetFlags(c), limit: Number(c.string("limit") ?? "20") },
          c.out,
        ),
    }),
    command({
      name: "wait",
      summary: "wait until every host runs REV",
      args: [{ name: "REV", help: "the revision every host must run (a commit of the clone)" }],
      options: [OPT.timeout, ...fleetOptions],
      examples: ["deploy-agent fleet wait origin/main --timeout 600"],
      notes: "exit 0 every host runs REV, 1 some do not after --timeout (named)",
      run: async (c) =>
        (await import("../commands/fleet-wait.js")).fleetWaitCommand(
          { ...fleetFlags(c), timeoutSeconds: Number(c.string("timeout") ?? "300") },
          c.args[0] ?? "",
          c.out,
        ),
    }),
  ],
  examples: ["deploy-agent fleet status"],
});

export const plan = command({
  name: "plan",
  summary: "what each host would do if --to were pushed onto hosts running --from",
  about:
    "what each host would do if --to were pushed onto hosts running --from, and every check that needs no host; in a clone, before the merge",
  options: [
    {
      name: "from",
      arg: "REV",
      help: "the revision the hosts run now (required; e.g. origin/main; 40 zeros: an empty base)",
    },
    { name: "to", arg: "REV", help: "the revision to preview (default HEAD)" },
    { name: "host", arg: "NAME", help: "only this host" },
    { name: "all", help: "every host (the default)" },
    OPT.json,
    { name: "markdown", help: "print the pull request comment instead of text" },
    { name: "post-gitea", help: "also post the comment and the statuses on the pull request" },
    clone,
  ],
  examples: ["deploy-agent plan --from origin/main --to HEAD --host lxc151"],
  notes: "exit 0 every check passed, 1 a check failed, 2 usage",
  run: async (c) =>
    (await import("../commands/plan.js")).planCommand(
      {
        repo: c.string("repo"),
        from: c.string("from"),
        to: c.string("to"),
        host: c.string("host"),
        all: c.flag("all"),
        json: c.flag("json"),
        markdown: c.flag("markdown"),
        postGitea: c.flag("post-gitea"),
      },
      c.out,
      c.err,
    ),
});

const secretFlags = (c: Call<"repo" | "json" | "hosts" | "identity" | "raw" | "editor">) => ({
  repo: c.string("repo"),
  json: c.flag("json"),
  hosts: c.string("hosts"),
  identity: c.string("identity"),
  raw: c.flag("raw"),
  editor: c.flag("editor"),
});

export const secret = group({
  name: "secret",
  summary: "age-encrypted secrets in the repository: set, list, rekey; check and rotate-webhook on a host",
  subcommands: [
    command({
      name: "set",
      summary: "encrypt a value from stdin (or typed, not echoed) to its hosts and the operators",
      args: [{ name: "NAME", help: "the secret's name: lowercase letters, digits and dashes" }],
      options: [
        { name: "hosts", arg: "a,b", help: "the hosts that may read it (required for a new secret)" },
        { name: "raw", help: "keep the value's last line break" },
        { name: "editor", help: "write the value in $EDITOR (default vi) instead of typing or piping it" },
        clone,
      ],
      examples: ["deploy-agent secret set draupnir-token --hosts lxc151 --editor"],
      run: async (c) =>
        (await import("../commands/secret.js")).secretSetCommand(
          secretFlags(c),
          c.args[0],
          process.stdin,
          c.out,
          c.err,
        ),
    }),
    command({
      name: "list",
      summary: "the secrets: hosts, recipients, age (never values)",
      options: [OPT.json, clone],
      examples: ["deploy-agent secret list"],
      notes: "exit 1 if one needs rekey",
      run: async (c) => (await import("../commands/secret.js")).secretListCommand(secretFlags(c), c.out),
    }),
    command({
      name: "rekey",
      summary: "re-encrypt to the catalog's recipients after a host was added or replaced",
      args: [{ name: "NAME", optional: true, help: "only this secret (default: every one)" }],
      options: [
        { name: "identity", arg: "FILE", path: true, help: "the operator's age identity to decrypt with" },
        clone,
      ],
      examples: ["deploy-agent secret rekey --identity ~/.config/age/operator.txt"],
      run: async (c) =>
        (await import("../commands/secret.js")).secretRekeyCommand(secretFlags(c), c.args[0], c.out),
    }),
    command({
      name: "check",
      summary: "on the host: decrypt each secret step's Matrix token and check whoami and power",
      options: [{ ...OPT.step, help: "only this secret step (repeatable)" }, OPT.noFetch, ...HOST_OPTIONS],
      examples: ["deploy-agent secret check --config /opt/matrix-config/config/lxc151.yaml"],
      run: async (c) =>
        (await import("../commands/secret-check.js")).secretCheckCommand(
          { ...hostFlags(c), step: c.list("step"), fetch: !c.flag("no-fetch") },
          c.out,
        ),
    }),
    command({
      name: "rotate-webhook",
      summary: "on the host: a next webhook secret accepted beside the current one, given to Gitea",
      options: [
        {
          name: "hook",
          arg: "URL",
          help: "the Gitea hook to change: its settings page or its API URL (needs GITEA_TOKEN or --token-file)",
        },
        { ...OPT.tokenFile, help: "a file (mode 0600) holding a Gitea token (default: $GITEA_TOKEN)" },
        { name: "finish", help: "the next secret becomes the current one" },
        { ...OPT.force, help: "a new next secret, or finish before a delivery came with it" },
        ...HOST_OPTIONS,
      ],
      examples: [
        "deploy-agent secret rotate-webhook --hook https://git.example.org/ops/matrix-config/settings/hooks/3",
        "deploy-agent secret rotate-webhook --finish",
      ],
      run: async (c) =>
        (await import("../commands/secret-rotate.js")).rotateWebhookCommand(
          {
            ...hostFlags(c),
            finish: c.flag("finish"),
            force: c.flag("force"),
            hook: c.string("hook"),
            tokenFile: c.string("token-file"),
          },
          c.out,
        ),
    }),
  ],
  examples: ["deploy-agent secret list"],
});
