import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { COMMANDS } from "../src/cli/commands.js";
import { leaves, parseCommandLine } from "../src/cli/parse.js";
import { type Call, type CommandSpec, isGroup, type Leaf } from "../src/cli/spec.js";
import { closest } from "../src/cli/suggest.js";
import { main } from "../src/cli.js";
import { readState } from "../src/state/read-state.js";
import { hostRoot, PROJECT, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/** The CLI read from its declarations: help, "did you mean", -V, and hostile argv. */

async function cli(...argv: string[]) {
  let out = "";
  let err = "";
  const code = await main(
    argv,
    (t) => {
      out += t;
    },
    (t) => {
      err += t;
    },
  );
  return { code, out, err };
}

/** argv as the parser reads it, for a command line the test expects to be accepted. */
function parsed(...argv: string[]): { leaf: Leaf; call: Call } {
  const p = parseCommandLine(
    COMMANDS,
    argv,
    () => {},
    () => {},
  );
  assert.equal(p.kind, "run", argv.join(" "));
  return p as { leaf: Leaf; call: Call };
}

/** Every command as typed: ["run"], ["fleet", "wait"], with its path of declarations. */
const PATHS: [string[], CommandSpec[]][] = COMMANDS.flatMap((c): [string[], CommandSpec[]][] =>
  isGroup(c)
    ? [
        [[c.name], [c]],
        ...c.subcommands.map((s): [string[], CommandSpec[]] => [
          [c.name, s.name],
          [c, s],
        ]),
      ]
    : [[[c.name], [c]]],
);

const VERSION = (JSON.parse(readFileSync(path.join(PROJECT, "package.json"), "utf8")) as { version: string })
  .version;

describe("help from the declarations", () => {
  it("the overview: --help, -h, help; it names every command and subcommand", async () => {
    const texts = await Promise.all([cli("--help"), cli("-h"), cli("help")]);
    for (const t of texts) assert.deepEqual([t.code, t.err], [0, ""]);
    assert.equal(texts[1]?.out, texts[0]?.out);
    assert.equal(texts[2]?.out, texts[0]?.out);
    const text = texts[0]?.out ?? "";
    assert.match(text, /^usage: deploy-agent <command> \[options\]\n/);
    for (const [words] of PATHS)
      assert.match(text, new RegExp(`\\n  ${words.join(" ")}\\b`), words.join(" "));
    assert.match(text, /-V, --version/);
  });

  it("each command's own help: CMD --help, CMD -h and help CMD print its usage, every option it takes and an example", async () => {
    for (const [words, path] of PATHS) {
      const cmd = path.at(-1) as CommandSpec;
      const [viaFlag, viaShort, viaHelp] = await Promise.all([
        cli(...words, "--help"),
        cli(...words, "-h"),
        cli("help", ...words),
      ]);
      const text = viaFlag.out;
      assert.equal(viaFlag.code, 0, words.join(" "));
      assert.equal(viaShort.out, text, words.join(" "));
      assert.equal(viaHelp.out, text, words.join(" "));
      assert.match(text, new RegExp(`^usage: deploy-agent ${words.join(" ")}\\b`));
      assert.match(text, /\nexamples?:\n {2}deploy-agent /, words.join(" "));
      if (isGroup(cmd)) for (const s of cmd.subcommands) assert.match(text, new RegExp(`\\n  ${s.name}\\b`));
      else
        for (const o of cmd.options)
          assert.match(
            text,
            new RegExp(`\\n  --${o.name}${o.arg ? ` ${o.arg}` : ""} +\\S`),
            `${words} --${o.name}`,
          );
    }
    const set = (await cli("help", "secret", "set")).out;
    assert.match(set, /^usage: deploy-agent secret set NAME \[options\]/);
    assert.match(set, /--hosts a,b +the hosts that may read it/);
    assert.doesNotMatch(set, /--config|--token-file/, "only secret set's own options");
    const status = (await cli("fleet", "status", "--help")).out;
    assert.match(status, /--token-file FILE/);
    assert.doesNotMatch(status, /--timeout|--limit/);
  });

  it("help runs nothing: `run --help` with a manifest that does not exist still prints help", async () => {
    const res = await cli("run", "--config", "/nonexistent.yaml", "--help");
    assert.equal(res.code, 0, res.err);
    assert.match(res.out, /^usage: deploy-agent run \[options\]/);
  });

  it("every example in the declarations parses as its own command", () => {
    for (const [words, path] of PATHS) {
      const cmd = path.at(-1) as CommandSpec;
      assert.ok(cmd.examples.length >= 1, words.join(" "));
      for (const example of cmd.examples) {
        // Shell words: quoted strings as one; a redirection ends the command.
        const argv = [...(example.split(" > ")[0] ?? "").matchAll(/"([^"]*)"|(\S+)/g)].map(
          (m) => m[1] ?? m[2] ?? "",
        );
        assert.equal(argv.shift(), "deploy-agent");
        const p = parseCommandLine(
          COMMANDS,
          argv,
          () => {},
          () => {},
        );
        assert.equal(p.kind, "run", example);
        const leaf = (p as { leaf: Leaf }).leaf;
        assert.ok(isGroup(cmd) ? cmd.subcommands.includes(leaf) : leaf === cmd, example);
      }
    }
  });

  it("an option's name means one thing: it takes a value in every command or in none", () => {
    const takes = new Map<string, boolean>();
    for (const leaf of leaves(COMMANDS))
      for (const o of leaf.options) {
        const seen = takes.get(o.name);
        if (seen !== undefined) assert.equal(Boolean(o.arg), seen, `--${o.name} in ${leaf.name}`);
        takes.set(o.name, Boolean(o.arg));
      }
  });
});

describe("did you mean", () => {
  it("unknown commands, subcommands, options and arguments are usage errors naming the closest", async () => {
    const cases: [string[], RegExp, string][] = [
      [["run", "--dryrun"], /^error USAGE: Unknown option '--dryrun'\n/, "--dry-run"],
      [["stauts"], /^error USAGE: unknown command "stauts"\n/, "status"],
      [["fleet", "stauts"], /^error USAGE: unknown subcommand "stauts" of fleet\n/, "status"],
      [["secret", "rekee"], /^error USAGE: unknown subcommand "rekee" of secret\n/, "rekey"],
      [["help", "fleet", "wiat"], /^error USAGE: unknown subcommand "wiat" of fleet\n/, "wait"],
      [["help", "isntall"], /^error USAGE: unknown command "isntall"\n/, "install"],
      [
        ["secret", "set", "x", "--host", "a"],
        /^error USAGE: --host is not an option of secret set\n/,
        "--hosts",
      ],
      [["history", "--limt", "3"], /^error USAGE: Unknown option '--limt'\n/, "--limit"],
      [["completion", "bsh"], /^error USAGE: completion takes SHELL bash, not "bsh"\n/, "bash"],
    ];
    for (const [argv, message, near] of cases) {
      const res = await cli(...argv);
      assert.equal(res.code, 2, argv.join(" "));
      assert.equal(res.out, "");
      assert.match(res.err, message);
      assert.match(res.err, new RegExp(`\\nhint: did you mean ${near}\\? `), argv.join(" "));
    }
    const far = await cli("frobnicate");
    assert.equal(far.code, 2);
    assert.match(
      far.err,
      /^error USAGE: unknown command "frobnicate"\nhint: deploy-agent help lists the commands\n$/,
    );
  });

  it("the closest is deterministic: a swap is one edit, ties go alphabetically, a unique prefix counts", () => {
    assert.equal(closest("stauts", ["status", "state-dir"]), "status");
    assert.equal(closest("dryrun", ["dry-run", "all"]), "dry-run");
    assert.equal(closest("rn", ["run", "rm"]), "rm", "both one edit away: the first alphabetically");
    assert.equal(closest("rn", ["rm", "run"]), "rm", "whatever the declarations' order");
    assert.equal(closest("stat", ["status", "suspend"]), "status");
    assert.equal(closest("x", ["status", "run"]), undefined);
  });

  it("an option of another command says whose it is", async () => {
    const res = await cli("fleet", "status", "--timeout", "5");
    assert.equal(res.code, 2);
    assert.match(
      res.err,
      /^error USAGE: --timeout is not an option of fleet status\nhint: it is an option of fleet wait; /,
    );
  });
});

describe("-V and --version", () => {
  it("print package.json's version, one line, exit 0; with anything else a usage error", async () => {
    for (const flag of ["-V", "--version"]) {
      const res = await cli(flag);
      assert.deepEqual(res, { code: 0, out: `${VERSION}\n`, err: "" });
    }
    for (const argv of [
      ["-V", "run"],
      ["run", "-V"],
      ["--version", "--json"],
      ["-V", "-V"],
      ["help", "--version"],
    ]) {
      const res = await cli(...argv);
      assert.equal(res.code, 2, argv.join(" "));
      assert.match(res.err, /^error USAGE: --version takes no other arguments\n/);
    }
  });

  it("the real process, through tsx (the bundle is tested by cli.test.ts)", async () => {
    const res = await runCli(["-V"]);
    assert.deepEqual([res.code, res.stdout, res.stderr], [0, `${VERSION}\n`, ""]);
  });
});

describe("hostile argv", () => {
  it("--opt=value and --opt value are the same; a value that looks like an option needs the = form", () => {
    assert.equal(parsed("suspend", "--reason=x y").call.string("reason"), "x y");
    assert.equal(parsed("suspend", "--reason", "x y").call.string("reason"), "x y");
    assert.equal(parsed("suspend", "--reason=--force").call.string("reason"), "--force");
    assert.equal(parsed("pin", "abc", "--reason=-V").call.string("reason"), "-V", "not the version flag");
    assert.throws(
      () => parsed("suspend", "--reason", "--force"),
      /argument is ambiguous.*--reason=-XYZ/s,
      "a value that looks like an option is refused, never taken as the flag or the value",
    );
  });

  it("-- ends the options: what follows is an argument, even --force", async () => {
    const p = parsed("pin", "--", "--force");
    assert.deepEqual(p.call.args, ["--force"]);
    assert.equal(p.call.flag("force"), false);
    const res = await cli("run", "--", "--dry-run");
    assert.equal(res.code, 2);
    assert.match(
      res.err,
      /^error USAGE: unexpected argument "--dry-run"\nhint: usage: deploy-agent run \[options\]\n/,
    );
  });

  it("an option given twice is refused unless it repeats (--step)", async () => {
    assert.deepEqual(parsed("run", "--step", "a", "--step=b").call.list("step"), ["a", "b"]);
    for (const argv of [
      ["run", "--config", "a.yaml", "--config", "b.yaml"],
      ["run", "--json", "--json"],
      ["history", "--step", "a", "--step", "b"],
    ]) {
      const res = await cli(...argv);
      assert.equal(res.code, 2, argv.join(" "));
      assert.match(res.err, /^error USAGE: --(config|json|step) given 2 times\nhint: give it once/);
    }
  });

  it("empty values: refused for names and paths, checked by their own rule where they have one", async () => {
    const cases: [string[], RegExp][] = [
      [["run", "--config", ""], /--config takes FILE, not an empty value/],
      [["run", "--config="], /--config takes FILE, not an empty value/],
      [["run", "--wait="], /--wait takes a number of seconds/],
      [["status", "--log-level="], /--log-level takes trace\|debug\|info\|warn\|error, not ""/],
      [["fleet", "wait", "HEAD", "--timeout", ""], /--timeout takes a number of seconds/],
      [["suspend", "--reason="], /--reason takes TEXT, not an empty value/],
      [["pin", ""], /pin takes REV, not an empty value/],
      [["help", ""], /help takes COMMAND, not an empty value/],
    ];
    for (const [argv, message] of cases) {
      const res = await cli(...argv);
      assert.equal(res.code, 2, `${argv.join(" ")}: ${res.err}`);
      assert.match(res.err, /^error USAGE: /);
      assert.match(res.err, message);
    }
  });

  it("a missing value, a flag given a value, an unknown short option, extra and missing arguments", async () => {
    const cases: [string[], RegExp][] = [
      [["run", "--config"], /Option '--config <value>' argument missing/],
      [["run", "--json=yes"], /Option '--json' does not take an argument/],
      [["run", "-x"], /Unknown option '-x'/],
      [["run", "--__proto__=x"], /Unknown option '--__proto__'/],
      [["constructor"], /unknown command "constructor"/],
      [["help", "toString"], /unknown command "toString"/],
      [["pin"], /pin needs REV\nhint: usage: deploy-agent pin REV \[options\]/],
      [["fleet", "wait"], /fleet wait needs REV/],
      [["fleet"], /fleet needs a subcommand: status, history, wait/],
      [["secret", "list", "extra"], /unexpected argument "extra"/],
      [["help", "run", "extra"], /unexpected argument "extra"/],
      [["help", "nonexistent"], /unknown command "nonexistent"/],
      [["completion"], /completion needs SHELL/],
      [[], /no command given\nhint: deploy-agent help lists the commands/],
    ];
    for (const [argv, message] of cases) {
      const res = await cli(...argv);
      assert.equal(res.code, 2, argv.join(" "));
      assert.match(res.err, /^error USAGE: /);
      assert.match(res.err, message, argv.join(" "));
    }
  });

  it("a typed word with control characters is quoted in the error, never printed raw to the terminal", async () => {
    for (const argv of [
      ["\u001b[2Jx"],
      ["fleet", "\u001b]0;pwned\u0007"],
      ["status", "--log-level=\u001b[31m"],
    ]) {
      const res = await cli(...argv);
      assert.equal(res.code, 2);
      assert.ok(!res.err.includes("\u001b") && !res.err.includes("\u0007"), argv.join(" "));
      assert.match(res.err, /\\u001b/, "escaped as JSON escapes it");
    }
  });

  describe("unicode and shell metacharacters in a value reach the command as they are", () => {
    let fx: Fixture;
    before(() => {
      fx = makeFixture({ "a.txt": "a\n" });
    });
    after(() => fx.cleanup());

    it("suspend --reason, through the real process; status shows it byte for byte, nothing runs", async () => {
      const root = hostRoot(fx.dir, "hostile-Secret-0123456789");
      const manifest = writeManifest(fx.dir, {
        steps: [{ name: "a", kind: "file", source: "a.txt", targets: ["/var/www/a.txt"] }],
      });
      const stateDir = path.join(fx.dir, "state");
      const canary = path.join(fx.dir, "canary");
      const reason = `naïve 🚀 — $(touch ${canary}); \`touch ${canary}\` | & > '"\\ *?[x] ~ \t end`;
      const common = ["--config", manifest, "--repo", fx.clone, "--root", root, "--state-dir", stateDir];
      const res = await runCli(["suspend", `--reason=${reason}`, ...common]);
      assert.equal(res.code, 0, res.stderr);
      const { state } = await readState(stateDir, "lxctest");
      assert.equal(state.suspended?.reason, reason);
      assert.equal(existsSync(canary), false, "no shell ever saw it");
      assert.equal(parsed("suspend", "--reason", reason).call.string("reason"), reason);
    });
  });
});

describe("bash completion, generated from the declarations and run by bash", () => {
  let fx: Fixture;
  let script: string;
  before(async () => {
    fx = makeFixture({});
    const res = await runCli(["completion", "bash"]);
    assert.equal(res.code, 0, res.stderr);
    script = path.join(fx.dir, "deploy-agent.bash");
    writeFileSync(script, res.stdout);
    mkdirSync(path.join(fx.dir, "config"));
    writeFileSync(path.join(fx.dir, "config/lxc151.yaml"), "");
  });
  after(() => fx.cleanup());

  /** The candidates bash's completion function offers with the cursor on the last word. */
  function complete(...words: string[]): string[] {
    const res = spawnSync(
      "bash",
      [
        "--norc",
        "--noprofile",
        "-c",
        'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _deploy_agent; printf "%s\\n" "${COMPREPLY[@]}"',
        "bash",
        script,
        "deploy-agent",
        ...words,
      ],
      { encoding: "utf8", cwd: fx.dir },
    );
    assert.equal(res.status, 0, res.stderr);
    return res.stdout.split("\n").filter(Boolean).sort();
  }

  it("registers itself for deploy-agent", () => {
    const res = spawnSync(
      "bash",
      ["--norc", "--noprofile", "-c", 'source "$1" && complete -p deploy-agent', "bash", script],
      {
        encoding: "utf8",
      },
    );
    assert.equal(res.stdout, "complete -F _deploy_agent deploy-agent\n", res.stderr);
  });

  it("commands, subcommands and each command's options, exactly as declared", () => {
    assert.deepEqual(complete(""), COMMANDS.map((c) => c.name).sort());
    assert.deepEqual(complete("st"), ["status"]);
    assert.deepEqual(complete("--"), ["--help", "--version"]);
    for (const [words, path] of PATHS) {
      const cmd = path.at(-1) as CommandSpec;
      const declared = isGroup(cmd) ? [] : cmd.options.map((o) => `--${o.name}`);
      assert.deepEqual(complete(...words, "--"), [...declared, "--help"].sort(), words.join(" "));
      if (isGroup(cmd)) assert.deepEqual(complete(...words, ""), cmd.subcommands.map((s) => s.name).sort());
    }
    assert.deepEqual(complete("secret", "set", "token", "--e"), ["--editor"]);
  });

  it("option values: choices, file names, nothing for free text; a value is never taken for a command", () => {
    assert.deepEqual(complete("run", "--log-level", ""), ["debug", "error", "info", "trace", "warn"]);
    assert.deepEqual(complete("run", "--log-level", "=", "d"), ["debug"], "--log-level=d, as bash splits it");
    assert.deepEqual(complete("run", "--config", "config/"), ["config/lxc151.yaml"]);
    assert.deepEqual(complete("suspend", "--reason", ""), []);
    assert.deepEqual(
      complete("--config", "status", "run", "--dry"),
      ["--dry-run"],
      "status is --config's value, run the command",
    );
    assert.deepEqual(complete("--config", "x.yaml", "fleet", ""), ["history", "status", "wait"]);
    assert.deepEqual(complete("pin", "--", "--"), [], "after --, no options");
  });

  it("help takes command words; completion takes bash", () => {
    assert.deepEqual(complete("help", "fl"), ["fleet"]);
    assert.deepEqual(complete("help", "secret", "re"), ["rekey"]);
    assert.deepEqual(complete("help", "run", ""), []);
    assert.deepEqual(complete("completion", ""), ["bash"]);
  });
});
