import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { createHostFs } from "../src/host/host-fs.js";
import { MAX_HOST_FILE_BYTES } from "../src/host/host-read.js";
import { type Agent, makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

/**
 * A target's directory may belong to a service's user (`owner:` a service, its config directory its own),
 * who can put anything at the target's name or at its temporary file's. As `nobody` (uid 65534, through
 * setpriv), that user plants links to a root-only file, a FIFO, a file past the bound, and swaps the
 * temporary file while the agent writes. The agent must never read, chmod or chown through any of them.
 * Acting as another user needs root; CI runs as root and fails here rather than skip.
 */

const NOBODY = 65534;
const PAGE = "<!doctype html><title>v1</title>\n";

/** A node script run as nobody, its stdout piped (it says "ready" once it watches). */
const asNobody = (script: string) =>
  spawn(
    "setpriv",
    ["--reuid", String(NOBODY), "--regid", String(NOBODY), "--clear-groups", process.execPath, "-e", script],
    { stdio: ["ignore", "pipe", "inherit"] },
  );

let fx: Fixture;
let agent: Agent;
let dir: string;
let victim: string;

function setup(target: string, extra: Record<string, unknown> = {}) {
  writeManifest(fx.dir, {
    steps: [{ name: "page", kind: "file", source: "page.html", targets: [target], mode: "0644", ...extra }],
  });
}

describe("a target's directory written by another user", () => {
  beforeEach(() => {
    assert.equal(process.getuid?.(), 0, "these tests act as another user: run them as root (CI does)");
    fx = makeFixture({ "page.html": PAGE });
    agent = makeAgent(fx.dir, fx.clone, writeManifest(fx.dir, { steps: [] }));
    // The service's directory, its user's own; the path to it traversable, as /opt is.
    for (const d of [fx.dir, agent.root]) chmodSync(d, 0o755);
    dir = path.join(agent.root, "opt/app");
    mkdirSync(dir, { recursive: true });
    chmodSync(path.join(agent.root, "opt"), 0o755);
    chownSync(dir, NOBODY, NOBODY);
    victim = path.join(fx.dir, "root-only.key");
    writeFileSync(victim, "AGE-SECRET-KEY-1ROOTONLY\n", { mode: 0o600 });
  });
  afterEach(() => fx.cleanup());

  const victimIntact = () => {
    assert.equal(readFileSync(victim, "utf8"), "AGE-SECRET-KEY-1ROOTONLY\n");
    const st = statSync(victim);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [0, 0, 0o600]);
  };

  it("a link at the target's name: TARGET_UNSAFE, nothing read through it, the link and what it points at kept", async () => {
    setup("/opt/app/app.html", { owner: "nobody" });
    symlinkSync(victim, path.join(dir, "app.html"));
    const report = await agent.run();
    const step = stepOf(report, "page");
    assert.equal(step.outcome, "failed");
    assert.equal(step.error?.code, "TARGET_UNSAFE");
    assert.match(step.error?.message ?? "", /\/opt\/app\/app\.html is a symbolic link/);
    assert.doesNotMatch(JSON.stringify(report), /ROOTONLY/);
    assert.ok(lstatSync(path.join(dir, "app.html")).isSymbolicLink());
    victimIntact();
  });

  it("a FIFO at the target's name fails at once (no run hangs with the lock held); a directory too", async () => {
    setup("/opt/app/app.html");
    execFileSync("mkfifo", [path.join(dir, "app.html")]);
    const started = Date.now();
    const step = stepOf(await agent.run(), "page");
    assert.equal(step.error?.code, "TARGET_UNSAFE");
    assert.match(step.error?.message ?? "", /is not a regular file/);
    assert.ok(Date.now() - started < 10_000, "not blocked on the FIFO");
    setup("/opt/app/sub");
    mkdirSync(path.join(dir, "sub"));
    assert.equal(stepOf(await agent.run(), "page").error?.code, "TARGET_UNSAFE");
  });

  it(`a host file of MAX_HOST_FILE_BYTES is read; one byte more is TARGET_UNSAFE`, async () => {
    const fs = createHostFs({
      root: agent.root,
      dryRun: true,
      record: () => {},
      run: async () => ({}) as never,
    });
    const file = path.join(dir, "big");
    writeFileSync(file, "");
    truncateSync(file, MAX_HOST_FILE_BYTES);
    assert.equal((await fs.snapshot("/opt/app/big")).data?.length, MAX_HOST_FILE_BYTES);
    truncateSync(file, MAX_HOST_FILE_BYTES + 1);
    await assert.rejects(fs.snapshot("/opt/app/big"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "TARGET_UNSAFE");
      assert.match(e.message, /is 67108865 bytes, more than the 67108864 read/);
      return true;
    });
    assert.equal(MAX_HOST_FILE_BYTES, 64 * 1024 * 1024);
  });

  it("the temporary file swapped for a link before the rename: TARGET_UNSAFE, the old page kept", async () => {
    writeFileSync(path.join(dir, "app.html"), "<!doctype html><title>v0</title>\n", { mode: 0o644 });
    // The validate command plays the directory's other user at the worst moment: the file is written,
    // its mode and owner set, the rename next.
    setup("/opt/app/app.html", {
      owner: "nobody",
      validate: [
        "sh",
        "-c",
        `for f in ${dir}/.app.html.deploy-agent-*; do rm -f "$f" && ln -s ${victim} "$f"; done`,
      ],
    });
    const step = stepOf(await agent.run(), "page");
    assert.equal(step.error?.code, "TARGET_UNSAFE", JSON.stringify(step.error));
    assert.match(step.error?.message ?? "", /was replaced while it was written/);
    assert.equal(readFileSync(path.join(dir, "app.html"), "utf8"), "<!doctype html><title>v0</title>\n");
    assert.ok(!lstatSync(path.join(dir, "app.html")).isSymbolicLink());
    victimIntact();
  });

  it("nobody swapping the temporary file for a link while validate runs: validate reads the file written", async () => {
    writeFileSync(path.join(dir, "app.html"), "<!doctype html><title>v0</title>\n", { mode: 0o644 });
    const seen = path.join(fx.dir, "validate-read");
    // The validator (root) waits until nobody has swapped the temporary file's name for a link to root's
    // key, then reads what it was handed and keeps a copy where nobody cannot write.
    setup("/opt/app/app.html", {
      validate: [
        "sh",
        "-c",
        `for i in $(seq 200); do for f in ${dir}/.app.html.deploy-agent-*; do [ -L "$f" ] && break 2; done; sleep 0.05; done; cat "$1" > ${seen}`,
        "sh",
        "{file}",
      ],
    });
    const attacker = asNobody(
      `const fs = require("node:fs"), p = require("node:path"), d = ${JSON.stringify(dir)}, done = new Set();
       fs.watch(d, (_, name) => {
         if (!name || !name.includes(".deploy-agent-") || done.has(name)) return;
         done.add(name);
         try { fs.renameSync(p.join(d, name), p.join(d, "stolen")); fs.symlinkSync(${JSON.stringify(victim)}, p.join(d, name)); } catch {}
       });
       process.stdout.write("ready\\n");`,
    );
    try {
      await new Promise((r) => attacker.stdout?.once("data", r));
      const report = await agent.run();
      const step = stepOf(report, "page");
      assert.equal(step.error?.code, "TARGET_UNSAFE", JSON.stringify(step.error));
      assert.equal(readFileSync(seen, "utf8"), PAGE, "validate read the file written, not root's key");
      assert.doesNotMatch(JSON.stringify(report), /ROOTONLY/);
      assert.equal(readFileSync(path.join(dir, "app.html"), "utf8"), "<!doctype html><title>v0</title>\n");
      victimIntact();
    } finally {
      attacker.kill();
    }
  });

  it("nobody racing every write for the temporary file never gets root's file chowned, chmodded or placed", async () => {
    setup("/opt/app/app.html", { owner: "nobody", mode: "0640" });
    // As nobody: each temporary file that appears is swapped for a link to root's key, as fast as it can.
    const attacker = asNobody(
      `const fs = require("node:fs"), p = require("node:path"), d = ${JSON.stringify(dir)};
         fs.watch(d, (_, name) => {
           if (!name || !name.includes(".deploy-agent-")) return;
           try { fs.renameSync(p.join(d, name), p.join(d, "stolen")); fs.symlinkSync(${JSON.stringify(victim)}, p.join(d, name)); } catch {}
         });
         process.stdout.write("ready\\n");`,
    );
    try {
      await new Promise((r) => attacker.stdout?.once("data", r));
      let refused = 0;
      for (let i = 0; i < 20; i++) {
        fx.push({ "page.html": `<!doctype html><title>v${i + 2}</title>\n` });
        const step = stepOf(await agent.run(), "page");
        if (step.outcome === "failed") {
          assert.equal(step.error?.code, "TARGET_UNSAFE", JSON.stringify(step.error));
          refused++;
        } else {
          const st = lstatSync(path.join(dir, "app.html"));
          assert.ok(st.isFile(), "what was placed is the file written, never a link");
          assert.deepEqual([st.uid, st.mode & 0o7777], [NOBODY, 0o640]);
        }
        victimIntact();
      }
      console.log(`the race: ${refused} of 20 writes refused, ${20 - refused} placed whole`);
    } finally {
      attacker.kill();
    }
    assert.equal(existsSync(victim), true);
  });
});
