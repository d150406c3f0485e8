import assert from "node:assert/strict";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/** cinny-nightly against a small local "Cinny" repository whose build writes a dist folder. */

const BUILD = `const fs = require("fs");
if (process.env.FAIL_BUILD) { console.error("[vite]: Rollup failed: JavaScript heap out of memory"); process.exit(1); }
fs.mkdirSync("dist", { recursive: true });
if (!process.env.NO_INDEX) fs.writeFileSync("dist/index.html", "<p>cinny " + fs.readFileSync("version.txt", "utf8").trim() + "</p>");
fs.writeFileSync("dist/config.json", '{"homeserverList":["matrix.org"]}');
fs.writeFileSync("dist/node-options.txt", process.env.NODE_OPTIONS || "");
`;

let fx: Fixture;
let root: string;
let manifest: string;
const web = () => path.join(root, "var/www/html");

async function nightly(env: Record<string, string> = {}, ...extra: string[]) {
  return runCli(["cinny-nightly", "--config", manifest, "--root", root, ...extra], env);
}

beforeEach(() => {
  // Its own package.json, as Cinny's checkout has: Node takes build.js's module type from the nearest one,
  // never from whatever directory the test's temporary files happen to sit under.
  fx = makeFixture({
    "build.js": BUILD,
    "version.txt": "1\n",
    "package.json": '{ "name": "cinny-fixture", "private": true, "type": "commonjs" }\n',
  });
  root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "opt"), { recursive: true });
  mkdirSync(path.join(root, "var/www"), { recursive: true });
  git(fx.dir, "clone", "--quiet", fx.origin, path.join(root, "opt/cinny-dev"));
  writeFileSync(
    path.join(root, "opt/cinny-dev/.cinny-config.json"),
    '{"homeserverList":["matrix.lotusguild.org"]}\n',
  );
  manifest = writeManifest(fx.dir, {
    cinny: { branch: "main", build: [["node", "build.js"]] },
    steps: [{ name: "noop", kind: "file", source: "version.txt", targets: ["/tmp/version.txt"] }],
  });
});
afterEach(() => fx.cleanup());

describe("cinny-nightly", () => {
  it("builds, restores config.json from the backup and points the web root at the new release", async () => {
    const res = await nightly();
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /deployed cinny main [0-9a-f]{12} to \/var\/www\/html/);
    assert.ok(lstatSync(web()).isSymbolicLink());
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 1</p>");
    assert.equal(
      readFileSync(path.join(web(), "config.json"), "utf8"),
      '{"homeserverList":["matrix.lotusguild.org"]}\n',
    );
    assert.equal(readFileSync(path.join(web(), "node-options.txt"), "utf8"), "--max_old_space_size=896");
  });

  it("a source clone that does not exist yet is a clear SOURCE_MISSING with the clone command, not INTERNAL", async () => {
    rmSync(path.join(root, "opt/cinny-dev"), { recursive: true, force: true });
    const res = await nightly();
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^error SOURCE_MISSING: Cinny's source clone \/opt\/cinny-dev does not exist\n/);
    assert.match(
      res.stderr,
      /hint: clone it once: git clone --branch main https:\/\/github.com\/cinnyapp\/cinny.git /,
    );
    assert.doesNotMatch(res.stderr, /INTERNAL| {4}at /, "no stack trace");
  });

  it("exits early when the branch has not moved", async () => {
    await nightly();
    const release = readlinkSync(web());
    const res = await nightly();
    assert.equal(res.code, 0);
    assert.match(res.stdout, /main unchanged at [0-9a-f]{12}; nothing to build/);
    assert.equal(readlinkSync(web()), release);
  });

  it("git runs with the agent's minimal environment: a GIT_DIR in the caller's environment is not seen", async () => {
    await nightly();
    // Another repository the caller's environment points git at: a git that saw it would reset that one.
    const decoy = path.join(fx.dir, "decoy");
    git(fx.dir, "init", "--quiet", "--initial-branch=main", decoy);
    git(decoy, "commit", "--quiet", "--allow-empty", "-m", "decoy");
    const decoyHead = git(decoy, "rev-parse", "HEAD");
    fx.push({ "version.txt": "2\n" });
    const res = await nightly({ GIT_DIR: path.join(decoy, ".git"), GIT_WORK_TREE: decoy });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 2</p>");
    assert.equal(git(decoy, "rev-parse", "HEAD"), decoyHead, "the decoy is untouched");
  });

  it("a failed build exits 1 with the build log tail and leaves the live site untouched", async () => {
    await nightly();
    const release = readlinkSync(web());
    fx.push({ "version.txt": "2\n" });
    const res = await nightly({ FAIL_BUILD: "1" });
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      /error BUILD_FAILED: build of [0-9a-f]{12} failed; the live site is untouched\. node build\.js exited with code 1: .*JavaScript heap out of memory/,
    );
    assert.equal(readlinkSync(web()), release);
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 1</p>");
  });

  it("a build without dist/index.html is refused", async () => {
    await nightly();
    fx.push({ "version.txt": "3\n" });
    const res = await nightly({ NO_INDEX: "1" }, "--force");
    assert.equal(res.code, 1);
    assert.match(res.stderr, /produced no dist\/index\.html; the live site is untouched/);
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 1</p>");
  });

  it("a copy that fails half-way leaves no partial release to be kept over the previous live one", async () => {
    assert.equal((await nightly()).code, 0);
    const first = readlinkSync(web());
    // A build output the copy refuses half-way (a FIFO; on a host, a full disk does the same).
    fx.push({
      "version.txt": "2\n",
      "build.js": `${BUILD}if (process.env.FIFO) require("child_process").execFileSync("mkfifo", ["dist/zz-pipe"]);\n`,
    });
    const failed = await nightly({ FIFO: "1" });
    assert.equal(failed.code, 1, failed.stdout);
    assert.equal(readlinkSync(web()), first, "the live site is untouched");
    assert.deepEqual(readdirSync(`${web()}.releases`), [path.basename(first)], "no partial release left");
    fx.push({ "version.txt": "3\n" });
    assert.equal((await nightly()).code, 0);
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 3</p>");
    assert.ok(
      readdirSync(`${web()}.releases`).includes(path.basename(first)),
      "the previous release is kept",
    );
  });

  it("moves a plain web root aside on first run, and keeps only the newest releases", async () => {
    mkdirSync(web());
    writeFileSync(path.join(web(), "index.html"), "<p>old build</p>");
    assert.equal((await nightly()).code, 0);
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 1</p>");
    for (const v of ["2", "3"]) {
      fx.push({ "version.txt": `${v}\n` });
      assert.equal((await nightly()).code, 0);
    }
    assert.equal(readFileSync(path.join(web(), "index.html"), "utf8"), "<p>cinny 3</p>");
    assert.equal(readdirSync(`${web()}.releases`).length, 2);
  });

  it("--dry-run says what it would build and changes nothing", async () => {
    const res = await nightly({}, "--dry-run");
    assert.equal(res.code, 0);
    // Every effect through the job's context, recorded and not done; past the build nothing can be known.
    assert.match(
      res.stdout,
      /^ {2}would run: git -C \S+\/opt\/cinny-dev reset --quiet --hard [0-9a-f]{40}$/m,
    );
    assert.match(res.stdout, /^ {2}would remove \/opt\/cinny-dev\/dist$/m);
    assert.match(res.stdout, /^ {2}would run: node build\.js$/m);
    assert.match(res.stdout, /would build main at [0-9a-f]{12} and switch \/var\/www\/html to it\n$/);
    assert.throws(() => lstatSync(web()));
  });
});
