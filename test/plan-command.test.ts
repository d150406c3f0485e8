import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  watch,
  writeFileSync,
} from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { buildPlan } from "../src/commands/plan.js";
import {
  giteaTargetFromEnv,
  MAX_EVENT_BYTES,
  POST_DEFAULTS,
  postToGitea,
} from "../src/commands/plan-gitea.js";
import type { HostPlan } from "../src/commands/plan-host.js";
import { MAX_COMMENT_CHARS, type PlanReport, renderMarkdown } from "../src/commands/plan-render.js";
import type { HostTools } from "../src/commands/plan-tool-run.js";
import { findTool, TOOL_TIMEOUT_MS, toolChecks } from "../src/commands/plan-tools.js";
import { Secret } from "../src/core/secret.js";
import { PROJECT, runCli } from "./helpers/agent.js";
import { type Files, type Fixture, git, makeFixture } from "./helpers/git.js";
import { type GiteaApi, startGiteaApi } from "./helpers/gitea-api.js";
import { needs } from "./helpers/needs.js";

/**
 * `deploy-agent plan` through the real CLI, on a real clone holding this repository's own host manifests,
 * transforms, fixtures and content, and `--post-gitea` against the Gitea API test server.
 */

const DEPLOYED = [
  "config/",
  "hookshot/",
  "cinny/",
  "draupnir/",
  "landing/",
  "systemd/",
  "test/fixtures/payloads/",
];

function projectFiles(): Files {
  const files: Files = {};
  for (const f of execFileSync("git", ["ls-files"], { cwd: PROJECT, encoding: "utf8" }).split("\n")) {
    if (DEPLOYED.some((d) => f.startsWith(d))) files[f] = readFileSync(path.join(PROJECT, f));
  }
  return files;
}

let fx: Fixture;
let base: string;

beforeEach(() => {
  fx = makeFixture(projectFiles());
  base = execFileSync("git", ["rev-parse", "HEAD"], { cwd: fx.pusher, encoding: "utf8" }).trim();
});
afterEach(() => fx.cleanup());

const plan = (...args: string[]) => runCli(["plan", "--repo", fx.pusher, ...args]);

async function planJson(from: string, to: string, ...more: string[]) {
  const res = await plan("--from", from, "--to", to, "--json", ...more);
  assert.ok(res.stdout.startsWith("{"), `no JSON: ${res.stdout}\n${res.stderr}`);
  return { code: res.code, report: JSON.parse(res.stdout) as PlanReport, stderr: res.stderr };
}

const host = (r: PlanReport, name: string): HostPlan => {
  const h = r.hosts.find((x) => x.host === name);
  assert.ok(h, `no host ${name} in ${r.hosts.map((x) => x.host).join(", ")}`);
  return h;
};
const step = (h: HostPlan, name: string) => {
  const s = h.steps.find((x) => x.name === name);
  assert.ok(s, `no step ${name}`);
  return s;
};
/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

const failed = (h: HostPlan) => h.checks.filter((c) => c.result === "failed");

/** LXC 139's manifest with one more step, `site`, installing landing/site.conf (`text`) at `target`. */
const siteFiles = (target: string, text: string): Files => ({
  "config/lxc139.yaml": `${readFileSync(path.join(PROJECT, "config/lxc139.yaml"), "utf8")}  - name: site
    kind: file
    source: landing/site.conf
    targets: [${target}]
`,
  "landing/site.conf": text,
});

/** One host's plan from the fixture's first commit to `head`, in process, with the tools given. */
const planOf = (hostName: string, head: string, tools: HostTools) =>
  buildPlan(
    {
      repo: fx.pusher,
      from: base,
      to: head,
      host: hostName,
      all: false,
      json: true,
      markdown: false,
      postGitea: false,
    },
    tools,
  );

/** Markdown with its code spans and fences taken out: a run of n backticks closes at the next run of n. */
function outsideCode(md: string): string {
  const parts = md.split(/(`+)/);
  let out = "";
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? "";
    const close = part.startsWith("`") ? parts.indexOf(part, i + 1) : -1;
    if (close === -1) out += part;
    else i = close;
  }
  return out;
}

describe("deploy-agent plan", () => {
  it("a clean change: the one step that runs, why, its diff; every check passes; exit 0", async () => {
    const page = readFileSync(path.join(PROJECT, "landing/index.html"), "utf8");
    const head = fx.push({
      "landing/index.html": page.replace("<title>Lotus Guild Matrix</title>", "<title>Lotus Guild</title>"),
    });
    const { code, report } = await planJson(base, head);
    assert.equal(code, 0, JSON.stringify(report.hosts.flatMap(failed)));
    assert.equal(report.schema, "deploy-agent/plan@1");
    assert.deepEqual(report.hosts.map((h) => h.host).sort(), ["lxc106", "lxc110", "lxc139", "lxc151"]);
    const landing = step(host(report, "lxc139"), "landing-page");
    assert.equal(landing.run, true);
    assert.equal(landing.reason, "Changed");
    assert.match(
      landing.work.join("\n"),
      /copy landing\/index\.html -> \/var\/www\/matrix-landing\/index\.html/,
    );
    assert.match(landing.work.join("\n"), /then run: nginx -t; nginx -s reload/);
    assert.match(
      landing.diffs[0]?.patch ?? "",
      /-.*<title>Lotus Guild Matrix<\/title>\n\+.*<title>Lotus Guild<\/title>/,
    );
    for (const h of ["lxc106", "lxc110", "lxc151"])
      assert.ok(
        host(report, h).steps.every((s) => !s.run),
        `${h} runs nothing`,
      );
    // The landing page went through the HTML check; LXC 151 needs its env file: placeholders, said.
    assert.ok(
      host(report, "lxc139").checks.some(
        (c) => /content check \(html\)/.test(c.name) && c.result === "passed",
      ),
    );
    assert.match(
      host(report, "lxc151").notes.join("\n"),
      /MATRIX_ROOM, MATRIX_SERVER, MATRIX_TOKEN come from the host's env file \(\/etc\/matrix-deploy\.env\)/,
    );
  });

  it("a broken transform fails the plan naming the check and the file; text output; exit 1", async () => {
    const head = fx.push({ "hookshot/sonarr.js": "result = { version: 'v2', plain: 'x' ;\n" });
    const res = await plan("--from", base, "--to", head);
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stdout, /step hookshot-transforms \(hookshot\): RUNS: changed: hookshot\/sonarr\.js/);
    assert.match(
      res.stdout,
      /failed {2}hookshot-transforms: transforms compiled and run over their fixtures \[hookshot\/sonarr\.js\]: hookshot\/sonarr\.js does not compile in hookshot's QuickJS/,
    );
    assert.match(res.stdout, /FAILED: lxc151\n$/);
    // A transform that compiles but throws on a real payload fails too.
    const head2 = fx.push({
      "hookshot/sonarr.js": "result = { version: 'v2', plain: data.series.title.toUpperCase() };\n",
    });
    const { code, report } = await planJson(head, head2);
    assert.equal(code, 1);
    assert.match(
      failed(host(report, "lxc151"))[0]?.message ?? "",
      /hookshot\/sonarr\.js on test\/fixtures\/payloads\/sonarr\/.*\.json: Transformation failed to run/,
    );
  });

  it("a manifest change is part of the plan: its diff, a new step, a moved target; an invalid manifest fails", async () => {
    const lxc139 = readFileSync(path.join(PROJECT, "config/lxc139.yaml"), "utf8")
      .replace("/var/www/matrix-landing/index.html", "/var/www/landing/index.html")
      .replace("  port: 9000", "  port: 9001");
    const head = fx.push({
      "config/lxc139.yaml": `${lxc139}  - name: robots
    kind: file
    source: landing/robots.txt
    targets: [/var/www/landing/robots.txt]
`,
      "landing/robots.txt": "User-agent: *\n",
    });
    const { code, report } = await planJson(base, head, "--host", "lxc139");
    assert.equal(code, 0, JSON.stringify(failed(host(report, "lxc139"))));
    const h = host(report, "lxc139");
    assert.deepEqual(
      report.hosts.map((x) => x.host),
      ["lxc139"],
      "--host plans that host only",
    );
    assert.match(
      h.manifestDiff?.patch ?? "",
      /-\s+- \/var\/www\/matrix-landing\/index\.html\n\+\s+- \/var\/www\/landing\/index\.html/,
    );
    assert.deepEqual(h.pendingRestart, ["listen"]);
    const robots = step(h, "robots");
    assert.equal(robots.run, true);
    assert.equal(robots.reason, "New");
    assert.equal(robots.diffs[0]?.change, "added");
    // The landing page's target moved, its file did not: the agent will not run it; the plan says so.
    assert.equal(step(h, "landing-page").run, false);
    assert.match(
      h.notes.join("\n"),
      /step landing-page: its settings change in the manifest but none of its files do/,
    );

    const broken = fx.push({ "config/lxc139.yaml": lxc139.replace("kind: file", "kind: fiel") });
    const bad = await planJson(head, broken, "--host", "lxc139");
    assert.equal(bad.code, 1);
    const [problem] = failed(host(bad.report, "lxc139"));
    assert.equal(problem?.name, "manifest");
    assert.equal(problem?.file, "config/lxc139.yaml");
    assert.match(problem?.message ?? "", /steps\.0\.kind: unknown step kind/);
  });

  it("Cinny's keys, Draupnir's config and the landing page are checked; a committed token never shows", async () => {
    const cinny = readFileSync(path.join(PROJECT, "cinny/config.json"), "utf8").replace(
      '"homeserverList"',
      '"homeServerList"',
    );
    const token = "draupnir-live-livetoken123456789";
    const draupnir = readFileSync(path.join(PROJECT, "draupnir/production.yaml"), "utf8").replace(
      "accessToken: REDACTED",
      `accessToken: "${token}"`,
    );
    const head = fx.push({
      "cinny/config.json": cinny,
      "draupnir/production.yaml": draupnir,
      "landing/index.html": "<html><body><p class=a class=b>hi</body></html>\n",
    });
    const res = await plan("--from", base, "--to", head, "--json");
    assert.equal(res.code, 1);
    assert.ok(
      !res.stdout.includes("livetoken123456789") && !res.stderr.includes("livetoken123456789"),
      "token shown",
    );
    const report = JSON.parse(res.stdout) as PlanReport;
    assert.match(failed(host(report, "lxc106"))[0]?.message ?? "", /homeServerList: not a key Cinny reads/);
    assert.equal(failed(host(report, "lxc106"))[0]?.file, "cinny/config.json");
    assert.match(
      failed(host(report, "lxc110"))[0]?.message ?? "",
      /must carry accessToken: REDACTED, not a real token/,
    );
    assert.match(
      step(host(report, "lxc110"), "draupnir-config").diffs[0]?.patch ?? "",
      /-accessToken: REDACTED\n\+accessToken: <redacted>/,
    );
    assert.match(
      failed(host(report, "lxc139"))
        .map((c) => c.message)
        .join(),
      /missing-doctype.*duplicate-attribute/,
    );
  });

  it("the placeholder stays in Draupnir's diff when the token is not touched", async () => {
    const draupnir = readFileSync(path.join(PROJECT, "draupnir/production.yaml"), "utf8");
    const head = fx.push({
      "draupnir/production.yaml": draupnir.replace(
        "experimentalRustCrypto: false",
        "experimentalRustCrypto: true",
      ),
    });
    const { code, report } = await planJson(base, head, "--host", "lxc110");
    assert.equal(code, 0);
    const s = step(host(report, "lxc110"), "draupnir-config");
    assert.equal(s.run, true);
    assert.match(s.diffs[0]?.patch ?? "", /-experimentalRustCrypto: false\n\+experimentalRustCrypto: true/);
    assert.match(
      s.work.join("\n"),
      /restart draupnir\.service, wait for http:\/\/127\.0\.0\.1:8081\/healthz/,
    );
  });

  it("usage errors exit 2", async () => {
    const noManifests = fx.push({
      "config/lxc106.yaml": null,
      "config/lxc110.yaml": null,
      "config/lxc139.yaml": null,
      "config/lxc151.yaml": null,
    });
    for (const args of [
      [],
      ["--from", base, "--json", "--markdown"],
      ["--from", base, "--host", "lxc151", "--all"],
      ["--from", "--upload-pack=evil"],
      ["--from", "nosuchrev"],
      ["--from", base, "--host", "lxc999"],
      ["--from", base, "--config", "x.yaml"],
      ["--from", base, "extra"],
      // No manifest at either end (the empty tree to a head without any).
      ["--from", "0".repeat(40), "--to", noManifests],
    ]) {
      const res = await plan(...args);
      assert.equal(res.code, 2, `${args.join(" ")}: ${res.stdout}${res.stderr}`);
      assert.match(res.stderr, /^error USAGE: /);
    }
  });

  it("at most MAX_DIFFS_PER_HOST diffs per host; the rest are named", async () => {
    const files: Files = {};
    for (let i = 0; i < 51; i++)
      files[`hookshot/t${String(i).padStart(2, "0")}.js`] = "result = { version: 'v2', plain: 'x' };\n";
    const head = fx.push(files);
    const { report } = await planJson(base, head, "--host", "lxc151");
    const s = step(host(report, "lxc151"), "hookshot-transforms");
    assert.equal(s.diffs.length, 50);
    assert.deepEqual(s.diffsLeftOut, ["hookshot/t50.js"]);
    // The comment names it too: a change must not hide behind fifty others.
    assert.match(
      renderMarkdown(report),
      /Not diffed for `hookshot-transforms` \(past the diffs shown per host\): `hookshot\/t50\.js`\./,
    );
    // Unmapped transforms are a failed check, each named.
    assert.equal(failed(host(report, "lxc151")).length, 51);
  });
});

describe("deploy-agent plan: units and nginx through their tools", {
  skip:
    needs("systemd-analyze", ["--version"], "apt-get install systemd; .ci/run does") ||
    needs("nginx", ["-v"], "apt-get install nginx; .ci/run does"),
}, () => {
  it("systemd-analyze verify catches a unit's unknown key; nginx -t a broken site", async () => {
    const unit = readFileSync(path.join(PROJECT, "systemd/livekit-server.service"), "utf8").replace(
      "[Service]",
      "[Service]\nRestartSecs=5",
    );
    const head = fx.push({
      "systemd/livekit-server.service": unit,
      ...siteFiles(
        "/etc/nginx/conf.d/matrix.conf",
        "server { listen 127.0.0.1:8099; locatoin / { return 200; } }\n",
      ),
    });
    const { code, report } = await planJson(base, head);
    assert.equal(code, 1);
    const unitCheck = host(report, "lxc151").checks.find(
      (c) => c.name === "livekit-unit: systemd-analyze verify",
    );
    assert.equal(unitCheck?.result, "failed");
    assert.match(
      unitCheck?.message ?? "",
      /livekit-server\.service:\d+: Unknown key 'RestartSecs' in section \[Service\]/,
    );
    const site = host(report, "lxc139").checks.find((c) => c.name === "site: nginx -t");
    assert.equal(site?.result, "failed");
    assert.match(site?.message ?? "", /unknown directive "locatoin"/);

    const fixed = fx.push({
      "systemd/livekit-server.service": readFileSync(path.join(PROJECT, "systemd/livekit-server.service")),
      "landing/site.conf": "server { listen 127.0.0.1:8099; location / { return 200; } }\n",
    });
    const ok = await planJson(head, fixed);
    assert.equal(ok.code, 0, JSON.stringify(ok.report.hosts.flatMap(failed)));
    assert.equal(host(ok.report, "lxc139").checks.find((c) => c.name === "site: nginx -t")?.result, "passed");
  });

  // A pull request's author chooses the unit's name, its directory and every Exec= path; the scratch root
  // holds the distribution's links (aliases, masked units). Nothing is written through one of them.
  it("the unit check writes nothing through a link: not the units it copies, not what they point at", async () => {
    const units = mkdtempSync(path.join(tmpdir(), "plan-units-"));
    try {
      const real = path.join(units, "real.service");
      const victim = path.join(units, "victim");
      writeFileSync(real, "[Unit]\nDescription=the distribution's\n", { mode: 0o644 });
      writeFileSync(victim, "a host file\n", { mode: 0o600 });
      symlinkSync("real.service", path.join(units, "alias.service"));
      symlinkSync(victim, path.join(units, "outside.service"));
      mkdirSync(path.join(units, "dir.d"));
      symlinkSync(units, path.join(units, "linked.d"));
      const manifest = readFileSync(path.join(PROJECT, "config/lxc151.yaml"), "utf8");
      const unit = (exec: string) => `[Unit]\nDescription=x\n[Service]\nExecStart=${exec}\n`;
      const pushUnit = (name: string, exec: string) =>
        fx.push({
          "config/lxc151.yaml": `${manifest}  - name: hostile
    kind: systemd-unit
    source: systemd/hostile.service
    unit: ${name}
    directory: /lib/systemd/system
`,
          "systemd/hostile.service": unit(exec),
        });
      const tools = {
        systemdAnalyze: findTool("systemd-analyze"),
        nginx: null,
        unitsDir: units,
        timeoutMs: TOOL_TIMEOUT_MS,
      };
      const planAt = async (head: string) => {
        const r = await planOf("lxc151", head, tools);
        return host(r, "lxc151").checks.find((c) => c.name === "hostile: systemd-analyze verify");
      };
      const cases: [string, string][] = [
        ["alias.service", "/lib/systemd/system/outside.service"],
        ["outside.service", "/lib/systemd/system/alias.service"],
        ["x.service", "/lib/systemd/system/linked.d/victim"],
      ];
      for (const [name, exec] of cases) {
        const check = await planAt(pushUnit(name, exec));
        assert.ok(check, `the unit ${name} was checked`);
        assert.equal(readFileSync(real, "utf8"), "[Unit]\nDescription=the distribution's\n", name);
        assert.equal(statSync(real).mode & 0o777, 0o644, name);
        assert.equal(readFileSync(victim, "utf8"), "a host file\n", name);
        assert.equal(statSync(victim).mode & 0o777, 0o600, name);
      }
      // Through a linked directory the stand-in is refused, and the check says so.
      const linked = await planAt(pushUnit("x.service", "/lib/systemd/system/linked.d/victim"));
      assert.equal(linked?.result, "failed");
      assert.match(
        linked?.message ?? "",
        /^the unit could not be put in a scratch root: .*linked\.d is a link or a file/,
      );
    } finally {
      rmSync(units, { recursive: true, force: true });
    }
  });

  it("nginx -t: an OpenSSL engine is refused, and a message quoting the snippet cannot make a broken one skipped", async () => {
    const check = async (text: string) => {
      const head = fx.push(siteFiles("/etc/nginx/conf.d/site.conf", text));
      const { report } = await planJson(base, head, "--host", "lxc139");
      const c = host(report, "lxc139").checks.find((x) => x.name === "site: nginx -t");
      assert.ok(c);
      return c;
    };
    const engine = await check(
      "server { listen 127.0.0.1:9 ssl; ssl_certificate data:x; ssl_certificate_key engine:/tmp/evil.so:id; }\n",
    );
    assert.equal(engine.result, "skipped");
    assert.match(
      engine.message,
      /^its ssl_certificate_key names an OpenSSL engine or store, which loads code/,
    );
    for (const forged of [
      '"No such file or directory";\nthis is { broken\n',
      '"x\\nnginx: [emerg] open() \\"/x\\" failed (2: No such file or directory)";\n',
    ]) {
      const c = await check(forged);
      assert.equal(c.result, "failed", `${JSON.stringify(forged)}: ${c.message}`);
    }
  });

  it("nginx -t as nobody: the scratch directory and the configuration stay root's; nobody owns only what nginx writes", {
    skip: process.getuid?.() === 0 ? false : "runs nginx as another user: only as root (CI is)",
  }, async () => {
    const bin = mkdtempSync(path.join(tmpdir(), "plan-nginx-bin-"));
    try {
      chmodSync(bin, 0o755);
      // A stand-in for nginx that tells what it sees: who it runs as, and the scratch directory's owners.
      const tool = path.join(bin, "nginx");
      writeFileSync(tool, '#!/bin/sh\nid -u\ncd "$4" && stat -c "%n %u %a" . * && exit 1\n', { mode: 0o755 });
      const head = fx.push(siteFiles("/etc/nginx/conf.d/site.conf", "server { listen 127.0.0.1:9; }\n"));
      const r = await planOf("lxc139", head, {
        systemdAnalyze: null,
        nginx: tool,
        unitsDir: "/lib/systemd/system",
        timeoutMs: TOOL_TIMEOUT_MS,
      });
      const seen = host(r, "lxc139").checks.find((c) => c.name === "site: nginx -t")?.message ?? "";
      const nobody = Number.parseInt(readFileSync("/proc/sys/kernel/overflowuid", "utf8"), 10);
      assert.match(seen, new RegExp(`^${nobody}\n`), seen);
      assert.match(seen, /^\. 0 755$/m, seen);
      for (const f of ["nginx.conf", "under-test.conf", "tmp"])
        assert.match(seen, new RegExp(`^${f} 0 `, "m"), f);
      for (const f of ["access.log", "error.log", "nginx.pid"])
        assert.match(seen, new RegExp(`^${f} ${nobody} 644$`, "m"), f);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  // A CI runner plans as its own user: nginx -t runs as that user, who may write where the snippet's paths
  // point. Every place nginx -t creates a file or a directory is watched, so even one made and removed counts.
  it("nginx -t as a user other than root: the snippet's log, temp and cache paths make nothing outside the scratch directory", {
    skip: process.getuid?.() === 0 ? false : "runs the plan as another user: only as root (CI is)",
  }, async () => {
    const outside = mkdtempSync(path.join(tmpdir(), "plan-nginx-outside-"));
    chownSync(outside, 65534, 65534);
    const made: string[] = [];
    const watcher = watch(outside, (_, name) => made.push(String(name)));
    try {
      const up = `../${path.basename(outside)}`;
      const snippet = [
        `access_log ${outside}/evil.log;`,
        `error_log "${outside}/error.log" warn;`,
        `'access_log' '${outside}/quoted.log' combined;`,
        `access_log\r\n${outside}/crlf.log\t;`,
        `access_log ${up}/relative.log;`,
        `fastcgi_cache_path ${outside}/cache levels=1:2 keys_zone=plan:1m;`,
        "server {",
        `  listen 127.0.0.1:8099; listen unix:${outside}/site.sock;`,
        `  access_log ${outside}/server.log combined buffer=4k;`,
        `  proxy_temp_path ${outside}/proxy-temp 1 2;`,
        `  location / { client_body_temp_path ${up}/body; error_log ${outside}/location.log; return 200; }`,
        "}",
        "",
      ].join("\n");
      // Loaded as root, then run as nobody: the checkout may sit where nobody cannot read (a 0700 home).
      const script = `import(${JSON.stringify(path.join(PROJECT, "src/commands/plan-tools.ts"))}).then(async (m) => {
        process.setgroups([]);
        process.setgid(65534);
        process.setuid(65534);
        const step = { kind: "file", name: "site", source: "site.conf", targets: ["/etc/nginx/conf.d/site.conf"] };
        const head = { read: async () => Buffer.from(${JSON.stringify(snippet)}) };
        const tools = { systemdAnalyze: null, nginx: ${JSON.stringify(findTool("nginx"))}, unitsDir: "/nonexistent", timeoutMs: 30000 };
        process.stdout.write(JSON.stringify({ uid: process.getuid(), checks: await m.toolChecks({ steps: [step] }, head, tools) }));
      });`;
      const ran = JSON.parse(
        execFileSync(process.execPath, ["--import", "tsx", "-e", script], { cwd: PROJECT, encoding: "utf8" }),
      ) as { uid: number; checks: { result: string; message: string }[] };
      assert.equal(ran.uid, 65534, "the plan ran as nobody");
      const [check] = ran.checks;
      // As root, the same check runs nginx as the kernel's nobody: the same directory for it to write in.
      const inProcess = async (text: string) =>
        (
          await toolChecks(
            {
              steps: [
                { kind: "file", name: "site", source: "site.conf", targets: ["/etc/nginx/conf.d/site.conf"] },
              ],
            } as never,
            { read: async () => Buffer.from(text) } as never,
            {
              systemdAnalyze: null,
              nginx: findTool("nginx"),
              unitsDir: "/nonexistent",
              timeoutMs: TOOL_TIMEOUT_MS,
            },
          )
        )[0];
      // As root, the same check runs nginx as the kernel's nobody: the same directory for it to write in.
      const asRoot = await inProcess(snippet);
      // Each path is a file or directory made in the scratch directory: a bounded number of them.
      const many = await inProcess(`access_log ${outside}/many.log;\n`.repeat(257));
      assert.equal(many?.result, "skipped");
      assert.match(
        many?.message ?? "",
        /^it names 257 log, temp, cache or socket paths, more than the 256 made here/,
      );
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(readdirSync(outside), [], "nothing is left outside the scratch directory");
      assert.deepEqual(made, [], "nothing was made there, not even for a while");
      for (const c of [check, asRoot]) {
        assert.equal(c?.result, "passed", c?.message);
        assert.match(c?.message ?? "", /its log, temp, cache and socket paths are the host's to check/);
      }
    } finally {
      watcher.close();
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it("nginx -t never runs a main nginx.conf, nor a snippet that includes a file; it opens nothing of the host's", async () => {
    const outside = mkdtempSync(path.join(tmpdir(), "plan-nginx-"));
    try {
      const secret = path.join(outside, "secret.conf");
      writeFileSync(secret, "GITEA_TOKEN=never-in-a-plan-0000;\n", { mode: 0o600 });
      const pushConf = (target: string, text: string) => fx.push(siteFiles(target, text));
      const check = async (head: string) => {
        const { report } = await planJson(base, head, "--host", "lxc139");
        const c = host(report, "lxc139").checks.find((x) => x.name === "site: nginx -t");
        assert.ok(c);
        assert.doesNotMatch(JSON.stringify(report), /never-in-a-plan/);
        return c;
      };
      const main = await check(
        pushConf(
          "/etc/nginx/nginx.conf",
          `error_log ${outside}/main.log;\nload_module ${outside}/evil.so;\nevents {}\n`,
        ),
      );
      assert.equal(main.result, "skipped");
      assert.match(main.message, /^a main nginx\.conf is not run here/);
      assert.equal(existsSync(path.join(outside, "main.log")), false, "nginx never ran it");

      const included = await check(
        pushConf("/etc/nginx/conf.d/site.conf", `server { listen 127.0.0.1:9; }\n"include" ${secret};\n`),
      );
      assert.equal(included.result, "skipped");
      assert.equal(
        included.message,
        `it includes "${secret}", which only the host has: the host's nginx -t checks it before the reload`,
      );

      // A log the snippet names for nginx to make: made in the scratch directory instead, as root or not.
      const log = path.join(outside, "created.log");
      const opens = await check(pushConf("/etc/nginx/conf.d/site.conf", `access_log ${log};\n`));
      assert.equal(existsSync(log), false, "nginx -t made it in the scratch directory");
      assert.equal(opens.result, "passed", opens.message);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});

describe("deploy-agent plan --post-gitea", () => {
  const TOKEN = "gitea-token-for-the-plan-1234";
  const READ_ONLY = "gitea-token-read-only-5678";
  let gitea: GiteaApi;
  let dir: string;
  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "plan-event-"));
    gitea = await startGiteaApi({
      token: TOKEN,
      readOnlyToken: READ_ONLY,
      repository: "LotusGuild/matrix",
      knows: () => true,
      issues: [7],
    });
  });
  afterEach(async () => {
    await gitea.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function event(head: string, pr = 7): Record<string, string> {
    const file = path.join(dir, "event.json");
    writeFileSync(
      file,
      JSON.stringify({
        action: "synchronized",
        number: pr,
        pull_request: {
          number: pr,
          html_url: `https://code.example/LotusGuild/matrix/pulls/${pr}`,
          head: { sha: head },
          base: { sha: base },
        },
      }),
    );
    return {
      GITHUB_EVENT_NAME: "pull_request",
      GITHUB_EVENT_PATH: file,
      GITHUB_REPOSITORY: "LotusGuild/matrix",
      GITHUB_API_URL: gitea.url,
      GITEA_TOKEN: TOKEN,
    };
  }

  it("one comment, edited on the next push; one status per host; the token never printed", async () => {
    // Someone else's comment carrying the marker is never taken for ours.
    gitea.addComment(7, "pr-author", "<!-- deploy-agent:plan --> I am not the bot");
    const head = fx.push({ "hookshot/sonarr.js": "result = { version: 'v2', plain: 'x' ;\n" });
    const run1 = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea", "--markdown"],
      event(head),
    );
    assert.equal(run1.code, 1, run1.stderr);
    assert.match(run1.stdout, /^<!-- deploy-agent:plan -->/);
    assert.ok(!run1.stdout.includes(TOKEN) && !run1.stderr.includes(TOKEN));
    assert.match(run1.stderr, /posted: comment \d+ on pull request #7 created/);
    const mine = () => gitea.comments.filter((c) => c.user.login === "deploy-bot");
    assert.equal(mine().length, 1);
    assert.match(mine()[0]?.body ?? "", /^<!-- deploy-agent:plan -->\n## Deploy preview/);
    assert.match(mine()[0]?.body ?? "", /### ❌ `lxc151` — `config\/lxc151\.yaml`/);
    assert.match(mine()[0]?.body ?? "", /<details><summary>Diffs \(1 file\(s\)\)<\/summary>/);
    assert.equal(gitea.latest(head, "plan/lxc151"), "failure");
    const desc = gitea.statuses.find((s) => s.context === "plan/lxc151")?.description ?? "";
    assert.match(
      desc,
      /hookshot-transforms: transforms compiled and run over their fixtures failed in hookshot\/sonarr\.js/,
    );
    assert.ok(desc.length <= 140);
    for (const h of ["lxc106", "lxc110", "lxc139"]) assert.equal(gitea.latest(head, `plan/${h}`), "success");
    assert.equal(gitea.statuses[0]?.target_url, "https://code.example/LotusGuild/matrix/pulls/7");

    // The second push to the same pull request: the same comment, edited; no second one.
    const id = mine()[0]?.id;
    const head2 = fx.push({ "hookshot/sonarr.js": readFileSync(path.join(PROJECT, "hookshot/sonarr.js")) });
    const second = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head2, "--post-gitea"],
      event(head2),
    );
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, new RegExp(`posted: comment ${id} on pull request #7 edited`));
    assert.equal(mine().length, 1);
    assert.equal(mine()[0]?.id, id);
    assert.match(mine()[0]?.body ?? "", /Every check (that ran )?passed/);
    assert.equal(
      gitea.comments.find((c) => c.user.login === "pr-author")?.body,
      "<!-- deploy-agent:plan --> I am not the bot",
    );
    assert.equal(gitea.latest(head2, "plan/lxc151"), "success");
    assert.ok(!gitea.bodies.some((b) => b.includes(TOKEN)));
  });

  it("a comment that cannot be posted is a warning: 403, 401, 404; the exit code is the plan's", async () => {
    const head = fx.push({ "landing/index.html": "<!doctype html><title>x</title>\n" });
    const cases: [Record<string, string>, RegExp][] = [
      [
        { GITEA_TOKEN: READ_ONLY },
        /could not post the plan comment: POST \/repos\/LotusGuild\/matrix\/issues\/7\/comments: HTTP 403/,
      ],
      [
        { GITEA_TOKEN: "wrong-token-000000000" },
        /could not look for the plan's comment \(GET \/user: HTTP 401[\s\S]*could not post the plan comment: POST \/repos\/LotusGuild\/matrix\/issues\/7\/comments: HTTP 401/,
      ],
      [
        { GITHUB_REPOSITORY: "LotusGuild/other" },
        /could not post the plan comment: POST \/repos\/LotusGuild\/other\/issues\/7\/comments: HTTP 404/,
      ],
      [{ GITEA_TOKEN: "" }, /warning: not posted to Gitea: GITEA_TOKEN is empty/],
      [
        { GITHUB_API_URL: `http://127.0.0.1:${await closedPort()}/api/v1` },
        /could not post the plan comment: POST \/repos\/LotusGuild\/matrix\/issues\/7\/comments: ECONNREFUSED/,
      ],
    ];
    for (const [env, warning] of cases) {
      const res = await runCli(["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea"], {
        ...event(head),
        ...env,
      });
      assert.equal(res.code, 0, `${JSON.stringify(env)}: ${res.stderr}`);
      assert.match(res.stderr, warning);
      assert.match(res.stdout, /all checks passed/);
    }
    assert.equal(gitea.comments.length, 0);
    // The read-only token could set no status either; each host's failure is its own warning.
    assert.equal(gitea.statuses.length, 0);
    // The 404 for an unknown pull request, as Gitea answers it.
    const unknown = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea"],
      event(head, 8),
    );
    assert.match(unknown.stderr, /issues\/8\/comments: HTTP 404/);
    assert.equal(
      gitea.latest(head, "plan/lxc139"),
      "success",
      "statuses are set even when the comment is not",
    );
  });

  // What a pull request's author controls: a second manifest for a host, a file name, a deleted manifest,
  // other people's comments, a head the plan cannot be made for.
  it("a second manifest naming a host fails both: plan/<host> is never green over the real one's red", async () => {
    const lxc139 = readFileSync(path.join(PROJECT, "config/lxc139.yaml"), "utf8");
    const head = fx.push({
      "landing/index.html": "<p>no doctype\n",
      "config/zz-spoof.yaml": lxc139.replace(/source: landing\/index\.html/, "source: landing/ok.html"),
      "landing/ok.html": "<!doctype html><title>ok</title>\n",
    });
    const res = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea"],
      event(head),
    );
    assert.equal(res.code, 1, res.stderr);
    const contexts = gitea.statuses.filter((s) => s.context === "plan/lxc139");
    assert.equal(contexts.length, 2, "one for each manifest");
    assert.deepEqual(
      contexts.map((s) => s.state),
      ["failure", "failure"],
    );
    assert.match(
      res.stdout,
      /failed {2}manifest: one per host \[config\/zz-spoof\.yaml\]: config\/lxc139\.yaml names host lxc139 too/,
    );
  });

  it("a deleted manifest is planned as failed; pull request text reaches the comment only inside code spans", async () => {
    const head = fx.push({
      "config/lxc110.yaml": null,
      "config/@admin <img src=x> [x](https:evil.example) `q.yaml": "host: [\n",
      "landing/index.html": `${readFileSync(path.join(PROJECT, "landing/index.html"), "utf8")}<!-- \u001b[1A\u001b[2K -->\n`,
    });
    const res = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea"],
      event(head),
    );
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stdout, /lxc110 \(config\/lxc110\.yaml\): FAILED/);
    assert.match(
      res.stdout,
      /manifest \[config\/lxc110\.yaml\]: deleted: the agent of lxc110 reads its manifest from this file/,
    );
    assert.equal(res.stdout.includes("\u001b"), false, "no escape character reaches the terminal");
    assert.match(res.stdout, /<!-- \?\[1A\?\[2K -->/);
    assert.equal(gitea.latest(head, "plan/lxc110"), "failure");
    const weird = gitea.statuses.find((s) => s.context.startsWith("plan/_admin"));
    assert.equal(
      weird?.context,
      "plan/_admin__img_src_x___x__https_evil_example___q",
      "a host name's characters only",
    );
    const body = gitea.comments.find((c) => c.user.login === "deploy-bot")?.body ?? "";
    // Outside code spans and the fenced diff, nothing of the file name is left to render.
    const prose = outsideCode(body);
    for (const raw of ["@admin", "<img", "](https:", "evil.example"])
      assert.equal(prose.includes(raw), false, `${raw} is outside a code span in:\n${prose}`);
    assert.match(body, /``config\/@admin <img src=x> \[x\]\(https:evil\.example\) `q\.yaml``/);
  });

  it("other people's comments too large to read: a new comment, never a stale verdict; no plan: said so", async () => {
    const head = fx.push({ "landing/index.html": "<!doctype html><title>x</title>\n" });
    const first = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", head, "--post-gitea"],
      event(head),
    );
    assert.equal(first.code, 0, first.stderr);
    const mine = () => gitea.comments.filter((c) => c.user.login === "deploy-bot");
    assert.match(mine()[0]?.body ?? "", /Every check (that ran )?passed/);
    for (let i = 0; i < 5; i++) gitea.addComment(7, "pr-author", "x".repeat(1024 * 1024));
    const broken = fx.push({ "landing/index.html": "<p>no doctype\n" });
    const second = await runCli(
      ["plan", "--repo", fx.pusher, "--from", base, "--to", broken, "--post-gitea"],
      event(broken),
    );
    assert.equal(second.code, 1);
    assert.match(
      second.stderr,
      /could not look for the plan's comment \(GET \/repos\/LotusGuild\/matrix\/issues\/7\/comments: the answer is larger than 4194304 bytes\): a new one is posted/,
    );
    assert.equal(mine().length, 2);
    assert.match(mine()[1]?.body ?? "", /Failed: `lxc139`/);

    // A head no plan can be made for (here every manifest gone with nothing at the base): the comment says so.
    const none = fx.push({
      "config/lxc106.yaml": null,
      "config/lxc110.yaml": null,
      "config/lxc139.yaml": null,
      "config/lxc151.yaml": null,
    });
    gitea.comments.splice(0, gitea.comments.length, ...mine().slice(0, 1));
    const third = await runCli(
      ["plan", "--repo", fx.pusher, "--from", "0".repeat(40), "--to", none, "--post-gitea"],
      event(none),
    );
    assert.equal(third.code, 2);
    assert.equal(mine().length, 1, "the earlier comment edited");
    assert.match(
      mine()[0]?.body ?? "",
      /## Deploy preview: no plan for this head\n\nThe plan could not be made: `USAGE: no host manifests/,
    );
    assert.doesNotMatch(mine()[0]?.body ?? "", /Every check (that ran )?passed/);
  });

  it("the test server follows Gitea's swagger: 422 for a comment without a body", async () => {
    const res = await fetch(`${gitea.url}/repos/LotusGuild/matrix/issues/7/comments`, {
      method: "POST",
      headers: { authorization: `token ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ text: "no body" }),
    });
    assert.equal(res.status, 422);
    const edit = await fetch(`${gitea.url}/repos/LotusGuild/matrix/issues/comments/999`, {
      method: "PATCH",
      headers: { authorization: `token ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ body: "x" }),
    });
    assert.equal(edit.status, 404);
  });
});

describe("deploy-agent plan: bounds", () => {
  const report = (patch: string): PlanReport => ({
    schema: "deploy-agent/plan@1",
    base: "a".repeat(40),
    head: "b".repeat(40),
    ok: true,
    hosts: [
      {
        host: "lxc139",
        manifestPath: "config/lxc139.yaml",
        manifestDiff: null,
        pendingRestart: [],
        placeholders: [],
        notes: [],
        ok: true,
        checks: [],
        steps: [
          {
            name: "landing-page",
            kind: "file",
            run: true,
            reason: "Changed",
            message: "changed",
            work: [],
            files: ["landing/index.html"],
            diffs: [{ path: "landing/index.html", change: "modified", added: 1, removed: 0, patch }],
            diffsLeftOut: [],
          },
        ],
      },
    ],
  });

  it("the comment keeps its diffs up to MAX_COMMENT_CHARS, leaves them out past it, and always fits", () => {
    const r = report("+x".repeat(100));
    const whole = renderMarkdown(r, 1e9).length - 1;
    assert.match(renderMarkdown(r, whole), /<details>/);
    assert.doesNotMatch(renderMarkdown(r, whole - 1), /<details>/);
    assert.match(renderMarkdown(r, whole - 1), /Diffs left out: the comment would pass/);
    assert.equal(MAX_COMMENT_CHARS, 60_000);
    const huge = renderMarkdown(report("+y\n".repeat(40_000)));
    assert.ok(huge.length <= MAX_COMMENT_CHARS, `${huge.length}`);
    assert.doesNotMatch(huge, /<details>/);
  });

  it("a comment cut to fit is cut at a line's end: no code span is left open for the pull request's text", () => {
    const r = report("+x");
    const hostile = "`` @admin **Every check passed.** [approve](https://evil.example) ";
    r.hosts[0]?.steps.push(
      ...Array.from({ length: 400 }, (_, i) => ({
        ...(r.hosts[0]?.steps[0] as HostPlan["steps"][number]),
        name: `step-${i}`,
        message: hostile.repeat(3),
      })),
    );
    for (const max of [20_000, 20_001, 20_017, 33_333]) {
      const md = renderMarkdown(r, max);
      assert.ok(md.length <= max, `${md.length} > ${max}`);
      assert.match(md, /_…cut to fit the comment\._\n$/);
      const prose = outsideCode(md);
      for (const raw of ["@admin", "**Every", "](https:"])
        assert.equal(prose.includes(raw), false, `${raw} outside a code span at max ${max}`);
    }
  });

  it("an answer of maxResponseBytes is read, one byte more is refused; a silent server times out", async () => {
    let size = 0;
    const server = createHttpServer((req, res) => {
      if (req.url === "/api/v1/hang") return; // never answers
      const login = "x".repeat(size - '{"login":""}'.length);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(req.url === "/api/v1/user" ? `{"login":"${login}"}` : "[]");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`;
    const target = {
      api,
      token: new Secret("bound-test-token-1234"),
      repository: "o/r",
      pr: 1,
      sha: null,
      url: null,
    };
    try {
      size = 1000;
      const ok = await postToGitea(target, [], "body", { timeoutMs: 5000, maxResponseBytes: 1000 });
      assert.doesNotMatch(ok.warnings.join("\n"), /larger than/);
      size = 1001;
      const big = await postToGitea(target, [], "body", { timeoutMs: 5000, maxResponseBytes: 1000 });
      assert.match(big.warnings.join("\n"), /GET \/user: the answer is larger than 1000 bytes/);
      assert.equal(POST_DEFAULTS.maxResponseBytes, 4 * 1024 * 1024);
      assert.equal(POST_DEFAULTS.timeoutMs, 10_000);
      const started = Date.now();
      const slow = await postToGitea({ ...target, api: `${api}/hang#` }, [], "body", {
        timeoutMs: 300,
        maxResponseBytes: 1000,
      });
      assert.match(slow.warnings.join("\n"), /timed out after 300 ms/);
      assert.ok(Date.now() - started < 3000);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it("an event file of MAX_EVENT_BYTES is read, one byte more is refused", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "plan-event-"));
    try {
      const file = path.join(dir, "event.json");
      const doc = JSON.stringify({ after: "c".repeat(40) });
      const env = {
        GITHUB_API_URL: "http://127.0.0.1:9/api/v1",
        GITEA_TOKEN: "t-123456789",
        GITHUB_REPOSITORY: "o/r",
        GITHUB_EVENT_PATH: file,
      };
      writeFileSync(file, doc + " ".repeat(MAX_EVENT_BYTES - doc.length));
      const ok = await giteaTargetFromEnv(env);
      assert.ok(typeof ok !== "string", String(ok));
      assert.equal(ok.sha, "c".repeat(40));
      assert.equal(ok.pr, null);
      writeFileSync(file, doc + " ".repeat(MAX_EVENT_BYTES - doc.length + 1));
      assert.match(String(await giteaTargetFromEnv(env)), /larger than 4194304 bytes/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a checking tool that does not finish within its timeout is killed and its check fails", async () => {
    const bin = mkdtempSync(path.join(tmpdir(), "plan-tools-"));
    try {
      const tool = path.join(bin, "systemd-analyze");
      writeFileSync(tool, "#!/bin/sh\nsleep 30\n", { mode: 0o755 });
      const head = fx.push({ "systemd/livekit-server.service": "[Unit]\nDescription=x\n" });
      const started = Date.now();
      const r = await planOf("lxc151", head, {
        systemdAnalyze: tool,
        nginx: null,
        unitsDir: "/lib/systemd/system",
        timeoutMs: 300,
      });
      const check = host(r, "lxc151").checks.find((c) => c.name === "livekit-unit: systemd-analyze verify");
      assert.equal(check?.result, "failed");
      assert.equal(check?.message, "systemd-analyze did not finish within 300 ms");
      // Waited for, it would take 30 s; the plan's own git work took up to 7 s on a loaded CI machine.
      assert.ok(Date.now() - started < 20_000, "killed, not waited for");
      assert.equal(TOOL_TIMEOUT_MS, 30_000);
      const none = await planOf("lxc151", head, {
        systemdAnalyze: null,
        nginx: null,
        unitsDir: "/lib/systemd/system",
        timeoutMs: 300,
      });
      assert.equal(
        host(none, "lxc151").checks.find((c) => c.name === "livekit-unit: systemd-analyze verify")?.result,
        "skipped",
      );
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

function bash(
  script: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-e", "-c", script], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

describe("the Gitea Actions workflow", () => {
  const file = path.join(PROJECT, ".gitea/workflows/deploy-preview.yaml");
  const workflow = parseYaml(readFileSync(file, "utf8")) as {
    on: Record<string, unknown>;
    jobs: Record<
      string,
      {
        steps: {
          name?: string;
          uses?: string;
          with?: Record<string, unknown>;
          env?: Record<string, string>;
          run?: string;
        }[];
      }
    >;
  };
  const steps = Object.values(workflow.jobs)[0]?.steps ?? [];

  /** The `${{ a.b || c.d }}` expressions the workflow uses, evaluated as Gitea does over its context. */
  const evaluate = (text: string, ctx: Record<string, unknown>) =>
    text.replace(/\$\{\{\s*(.+?)\s*\}\}/g, (_, expr: string) => {
      for (const operand of expr.split("||")) {
        let v: unknown = ctx;
        for (const key of operand.trim().split(".")) v = (v as Record<string, unknown> | undefined)?.[key];
        if (v) return String(v);
      }
      return "";
    });

  /** The workflow's plan step run as the runner runs it, for an event about `head`, in the pusher clone. */
  const planStepRunner =
    (gitea: GiteaApi, dir: string, head: string, token: string, repository: string) =>
    (event: Record<string, unknown>, eventName: string) => {
      const planStep = steps.find((s) => s.name === "plan every host");
      const eventPath = path.join(dir, `${eventName}.json`);
      writeFileSync(eventPath, JSON.stringify(event));
      const ctx = { github: { event, sha: head }, secrets: { DEPLOY_PREVIEW_TOKEN: token } };
      const env = Object.fromEntries(
        Object.entries(planStep?.env ?? {}).map(([k, v]) => [k, evaluate(v, ctx)]),
      );
      // Not spawnSync: the Gitea test server answers from this process's event loop.
      return bash(planStep?.run ?? "false", fx.pusher, {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        GITHUB_EVENT_NAME: eventName,
        GITHUB_EVENT_PATH: eventPath,
        GITHUB_REPOSITORY: repository,
        GITHUB_SERVER_URL: gitea.url.replace(/\/api\/v1$/, ""),
        GITHUB_SHA: head,
        ...env,
      });
    };

  it("runs on pull requests and pushes to any branch, on Node 20, with the token from the secrets", () => {
    assert.ok("pull_request" in workflow.on);
    assert.deepEqual(workflow.on.push, { branches: ["**"] });
    assert.equal(steps.find((s) => s.uses?.startsWith("actions/setup-node"))?.with?.["node-version"], 20);
    assert.ok(steps.some((s) => s.run?.trim() === "npm ci --no-audit --no-fund"));
    const planStep = steps.find((s) => s.name === "plan every host");
    assert.equal(planStep?.env?.GITEA_TOKEN, "${{ secrets.DEPLOY_PREVIEW_TOKEN }}");
  });

  it("its plan step, run as the runner runs it, comments on the pull request and sets the statuses", async (t) => {
    const dist = path.join(PROJECT, "dist/src/bin.js");
    if (!existsSync(dist)) assert.fail("dist/src/bin.js is missing: node build.mjs (npm ci runs it)");
    const TOKEN = "workflow-secret-token-4242";
    const gitea = await startGiteaApi({
      token: TOKEN,
      repository: "LotusGuild/matrix",
      knows: () => true,
      issues: [3],
    });
    const dir = mkdtempSync(path.join(tmpdir(), "plan-workflow-"));
    t.after(async () => {
      await gitea.close();
      rmSync(dir, { recursive: true, force: true });
    });
    // The job's checkout: the clone, with the agent built in it (npm ci).
    symlinkSync(path.join(PROJECT, "dist"), path.join(fx.pusher, "dist"));
    const head = fx.push({
      "cinny/config.json": '{ "homeserverList": ["matrix.lotusguild.org"], "defaultHomeserver": 2 }\n',
    });
    const run = planStepRunner(gitea, dir, head, TOKEN, "LotusGuild/matrix");
    const pr = await run(
      {
        number: 3,
        pull_request: { number: 3, head: { sha: head }, base: { sha: base }, html_url: "http://x/pulls/3" },
      },
      "pull_request",
    );
    assert.equal(pr.status, 1, pr.stderr);
    assert.match(
      pr.stdout,
      /failed {2}cinny-config: content check \(cinny-config\) \[cinny\/config\.json\]: .*defaultHomeserver must index into homeserverList/,
    );
    assert.equal(gitea.comments.length, 1, pr.stderr);
    assert.equal(gitea.latest(head, "plan/lxc106"), "failure");
    assert.equal(gitea.latest(head, "plan/lxc151"), "success");
    assert.ok(!`${pr.stdout}${pr.stderr}`.includes(TOKEN));

    // A push that creates a branch: no "before"; planned from where it left the default branch; no comment.
    const push = await run(
      { before: "0".repeat(40), after: head, repository: { default_branch: "main" } },
      "push",
    );
    assert.equal(push.status, 1, "the checks look at what the branch holds: Cinny's config is still broken");
    assert.match(push.stdout, new RegExp(`^plan ${head.slice(0, 12)} -> ${head.slice(0, 12)}`));
    assert.equal(gitea.comments.length, 1);
    assert.equal(gitea.statuses.filter((s) => s.context === "plan/lxc106").length, 2);
  });

  it("plans a pull request from where it left its base, and a force-push whose before is gone", async (t) => {
    const dist = path.join(PROJECT, "dist/src/bin.js");
    if (!existsSync(dist)) assert.fail("dist/src/bin.js is missing: node build.mjs (npm ci runs it)");
    const gitea = await startGiteaApi({
      token: "t-4242424242",
      repository: "o/r",
      knows: () => true,
      issues: [4],
    });
    const dir = mkdtempSync(path.join(tmpdir(), "plan-workflow-"));
    t.after(async () => {
      await gitea.close();
      rmSync(dir, { recursive: true, force: true });
    });
    symlinkSync(path.join(PROJECT, "dist"), path.join(fx.pusher, "dist"));
    // The pull request changes the landing page's title; main then moves on with a change of its own.
    const page = readFileSync(path.join(PROJECT, "landing/index.html"), "utf8");
    const head = fx.push({ "landing/index.html": page.replace("<title>", "<title>PR ") });
    git(fx.pusher, "checkout", "-q", "-b", "moved", base);
    writeFileSync(path.join(fx.pusher, "cinny/moved.txt"), "main moved on\n");
    git(fx.pusher, "add", "-A");
    git(fx.pusher, "commit", "-q", "-m", "main moves on");
    const moved = git(fx.pusher, "rev-parse", "HEAD");
    git(fx.pusher, "checkout", "-q", "main");
    const run = planStepRunner(gitea, dir, head, "t-4242424242", "o/r");
    const pr = await run(
      { number: 4, pull_request: { number: 4, head: { sha: head }, base: { sha: moved } } },
      "pull_request",
    );
    assert.equal(pr.status, 0, pr.stderr);
    assert.match(pr.stdout, new RegExp(`^plan ${base.slice(0, 12)} -> ${head.slice(0, 12)}`));
    assert.doesNotMatch(pr.stdout, /moved\.txt/, "main's newer change is not shown as undone");

    // A force-push: its "before" was never fetched into this clone.
    const forced = await run(
      { before: "f".repeat(40), after: head, repository: { default_branch: "main" } },
      "push",
    );
    assert.equal(forced.status, 0, `planned from where it left main, not a usage error: ${forced.stderr}`);
    assert.match(forced.stdout, /^plan [0-9a-f]{12} -> /);
  });
});
