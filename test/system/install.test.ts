import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { parse } from "dotenv";
import { envLine } from "../../src/host/env.js";
import { freePort, PROJECT } from "../helpers/agent.js";
import { HOSTILE_VALUES } from "../helpers/env-values.js";
import { git } from "../helpers/git.js";
import { giteaHeaders, pushBody } from "../helpers/gitea.js";
import { type MatrixTestServer, startMatrixServer } from "../helpers/matrix-server.js";
import { needs } from "../helpers/needs.js";
import { boot, type Container, type Run, startRun } from "./container.js";

/**
 * The product run exactly as a host runs it: for each of the four host roles, a freshly booted Debian 12
 * container with a real systemd follows the README's install section command by command (clone, npm ci,
 * prune, deploy-agent install), then the agent is driven the way production drives it: start-up reconcile,
 * signed Gitea pushes, systemctl stop during a step, kill -9, a configuration error, the LiveKit timer, the
 * Cinny cron line, and the journal read for secrets. Stand-ins only where the real service cannot be had:
 * the Matrix test homeserver (on the host's loopback), LiveKit and Draupnir (test/system/standins/); nginx,
 * cron, git, systemd and the webhook binary being migrated from are Debian's own.
 */

const URL_IN_README = "https://code.lotusguild.org/LotusGuild/matrix";
const ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
const MATRIX_TOKEN = `syt_amFyZWQ_system${randomBytes(8).toString("hex")}`;
const DRAUPNIR_TOKEN = `syt_ZHJhdXBuaXI_live${randomBytes(8).toString("hex")}`;
// What dotenv cut short when install wrote it unquoted: a `#`, and `$`, quotes and spaces besides.
const OLD_SECRET_151 = `old-webhook-secret-151#${randomBytes(12).toString("hex")} $HOME "q" x`;
const OLD_SECRET_110 = `old-webhook-secret-110-${randomBytes(12).toString("hex")}`;
const TRANSFORMS = readFileSync(path.join(PROJECT, "config/lxc151.yaml"), "utf8")
  .split("\n")
  .flatMap((l) => /^\s{6}([a-z-]+)\.js: ~$/.exec(l)?.[1] ?? []);
// The transform checks loop over these: none found would make them pass without checking anything.
assert.ok(TRANSFORMS.length >= 10, `config/lxc151.yaml's transforms found: ${TRANSFORMS.join(", ")}`);

function unavailable(): string | false {
  if (process.getuid?.() !== 0) {
    const reason = "the system tests boot containers and need root";
    if (process.env.CI) throw new Error(`${reason}: CI runs every suite`);
    return reason;
  }
  return (
    needs("systemd-nspawn", ["--version"], "apt-get install systemd-container; .ci/run does") ||
    needs("debootstrap", ["--version"], "apt-get install debootstrap; .ci/run does")
  );
}

/** The README's install commands, one per line, for this host and this test's origin. */
function readmeInstall(host: string, origin: string): string[] {
  const readme = readFileSync(path.join(PROJECT, "README.md"), "utf8");
  const block = /<!-- install:begin[^>]*-->\n```sh\n([\s\S]*?)```\n<!-- install:end -->/.exec(readme)?.[1];
  assert.ok(block, "README has the install block");
  return block
    .trim()
    .split("\n")
    .map((l) => l.replaceAll(URL_IN_README, origin).replace(/--host lxc151\b/, `--host ${host}`));
}

/**
 * The host ports of this run, chosen free. The containers share the host's network, and so would a second run
 * on the same machine: no port is fixed. The repository's configuration is rewritten to them (usePorts).
 */
const PORT_NAMES = [
  "lxc151",
  "lxc106",
  "lxc139",
  "lxc110",
  "livekitMetrics",
  "livekitRtc",
  "draupnirHealth",
  "landing",
] as const;
type Ports = Record<(typeof PORT_NAMES)[number], number>;

async function freePorts(): Promise<Ports> {
  const ports = {} as Ports;
  const taken = new Set<number>();
  for (const name of PORT_NAMES) {
    let port: number;
    do port = await freePort();
    while (taken.has(port));
    taken.add(port);
    ports[name] = port;
  }
  return ports;
}

/** Puts this run's ports in place of the production ones in the configuration the containers deploy. */
function usePorts(tree: string, p: Ports) {
  const edit = (file: string, from: RegExp, to: (match: string) => string) => {
    const f = path.join(tree, file);
    const text = readFileSync(f, "utf8");
    assert.match(text, from, `${file} still has what the system test rewrites`);
    writeFileSync(f, text.replace(from, to));
  };
  const port = (n: number) => (m: string) => m.replace(/\d+$/, String(n));
  edit("config/lxc151.yaml", /^ {2}port: 9500$/m, port(p.lxc151));
  edit("config/lxc151.yaml", /^ {2}metricsUrl: http:\/\/127\.0\.0\.1:6789/m, port(p.livekitMetrics));
  edit("config/lxc151.yaml", /^ {2}rtcTcpPort: 7881$/m, port(p.livekitRtc));
  for (const host of ["lxc106", "lxc139", "lxc110"] as const)
    edit(`config/${host}.yaml`, /^ {2}port: 9000$/m, port(p[host]));
  edit("config/lxc110.yaml", /^ {4}healthUrl: http:\/\/127\.0\.0\.1:8081/m, port(p.draupnirHealth));
  edit("draupnir/production.yaml", /^ {2}healthz:\n(?: {4}.*\n)*? {4}port: 8081$/m, port(p.draupnirHealth));
}

interface World {
  run: Run;
  ports: Ports;
  tarball: string;
  srv: string;
  origin: string;
  pusher: string;
  hs: MatrixTestServer;
}

/** Commits files in the pusher clone and pushes them to origin; returns [before, after]. */
function push(w: World, files: Record<string, string>, message: string): [string, string] {
  const before = git(w.pusher, "rev-parse", "HEAD");
  for (const [p, content] of Object.entries(files)) writeFileSync(path.join(w.pusher, p), content);
  git(w.pusher, "commit", "-qam", message);
  git(w.pusher, "push", "-q", "origin", "HEAD:main");
  return [before, git(w.pusher, "rev-parse", "HEAD")];
}

/** A signed Gitea push delivery, as Gitea sends it. */
async function deliver(port: number, hookPath: string, secret: string, [before, after]: [string, string]) {
  const body = pushBody({ before, after });
  const res = await fetch(`http://127.0.0.1:${port}${hookPath}`, {
    method: "POST",
    headers: giteaHeaders(body, secret),
    body: new Uint8Array(body),
  });
  return res.status;
}

/** The container the running role's tests drive; its journal explains a timeout. */
let current: Container | undefined;

/**
 * Polls until probe gives a value. On a timeout the error carries the agent's journal from `on`, so a failure
 * in CI says what the daemon did.
 */
async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 60_000,
  on: Container | undefined = current,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) {
      const journal = on
        ? `\n--- journal of ${on.name}\n${await on.journal("-u 'deploy-agent*' -u 'livekit*' -n 60")}`
        : "";
      throw new Error(`timed out after ${ms} ms: ${what}${journal}`);
    }
    await sleep(250);
  }
}

const healthz = (port: number) =>
  fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
    (r) => r.status,
    () => 0,
  );

/** What an operator does before installing: the config clone in place, maybe the old webhook listener. */
async function prepareHost(
  c: Container,
  w: World,
  old?: { id: string; port: number; secret: string; template?: boolean },
) {
  await c.sh(`git clone -q ${w.origin} /opt/matrix-config`);
  if (!old) return;
  const hooks = [
    {
      id: old.id,
      "execute-command": "/usr/local/bin/matrix-deploy.sh",
      "command-working-directory": "/opt/matrix-config",
      "trigger-rule": {
        and: [
          {
            match: {
              type: "payload-hmac-sha256",
              // With -template, webhook renders getenv from its unit's EnvironmentFile= before parsing.
              secret: old.template ? "{{ getenv `DEPLOY_HMAC` }}" : old.secret,
              parameter: { source: "header", name: "X-Gitea-Signature" },
            },
          },
          {
            match: { type: "value", value: "refs/heads/main", parameter: { source: "payload", name: "ref" } },
          },
        ],
      },
    },
  ];
  mkdirSync(c.file("/etc/webhook"), { recursive: true });
  writeFileSync(c.file("/etc/webhook/hooks.json"), JSON.stringify(hooks, null, 2), { mode: 0o600 });
  writeFileSync(c.file("/usr/local/bin/matrix-deploy.sh"), "#!/bin/sh\necho old deploy script\n", {
    mode: 0o755,
  });
  if (old.template) writeFileSync(c.file("/etc/webhook/env"), `DEPLOY_HMAC=${old.secret}\n`, { mode: 0o600 });
  const template = old.template ? " -template" : "";
  const envFile = old.template ? "EnvironmentFile=/etc/webhook/env\n" : "";
  writeFileSync(
    c.file("/etc/systemd/system/webhook.service"),
    `[Unit]\nDescription=Webhook listener (matrix-deploy)\nAfter=network.target\n\n[Service]\n${envFile}ExecStart=/usr/bin/webhook -hooks /etc/webhook/hooks.json -port ${old.port}${template} -verbose\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n`,
  );
  await c.sh("systemctl daemon-reload && systemctl enable -q --now webhook.service");
  await eventually(
    "the old webhook listener",
    async () =>
      (await fetch(`http://127.0.0.1:${old.port}/hooks/${old.id}`, { method: "POST" }).catch(() => null))
        ?.status,
  );
}

/** Runs the README's install lines; returns their output. */
async function install(c: Container, w: World, host: string, opts: { check?: boolean } = {}) {
  let lines = readmeInstall(host, w.origin);
  // A test before this one ran the README's lines up to install itself.
  if (existsSync(c.file("/opt/deploy-agent/dist/src/bin.js"))) lines = lines.slice(-1);
  const res = await c.sh(`set -ex\n${lines.join("\n")}`, { timeoutMs: 15 * 60_000, check: opts.check });
  return opts.check === false ? res : { ...res, code: 0 };
}

async function assertRunning(c: Container, host: string, port: number) {
  const unit = await c.waitUnit(`deploy-agent@${host}.service`, (p) => p.ActiveState === "active");
  assert.equal(unit.NRestarts, "0", "never restarted");
  assert.equal(
    await eventually(`/healthz on ${port}`, async () => ((await healthz(port)) === 200 ? 200 : undefined)),
    200,
  );
  assert.match((await c.sh("deploy-agent --version")).stdout, /^\d+\.\d+\.\d+\n$/, "deploy-agent is on PATH");
}

async function assertNoSecrets(c: Container, ...secrets: string[]) {
  const journal = await c.journal();
  assert.match(journal, /"msg":"listening"/, "the agent logs to the journal");
  for (const s of secrets) assert.equal(journal.includes(s), false, "a secret reached the journal");
}

/** The deployed state of a step, from the agent's state file. */
function applied(c: Container, step: string): string | undefined {
  const file = c.file("/var/lib/deploy-agent/state.json");
  if (!existsSync(file)) return undefined;
  return (
    JSON.parse(readFileSync(file, "utf8")) as { steps: Record<string, { lastAppliedRevision?: string }> }
  ).steps[step]?.lastAppliedRevision;
}

const skip = unavailable();
/** SYSTEST_ROLES=lxc151,lxc110 runs only those roles (local debugging; CI runs all). */
const only = process.env.CI ? undefined : process.env.SYSTEST_ROLES?.split(",");
const role = (host: string) => ({ skip: only && !only.includes(host) ? "not in SYSTEST_ROLES" : false });

describe("system: the README's install under a real systemd, for each host role", {
  skip,
  timeout: 40 * 60_000,
}, () => {
  const w = {} as World;

  before(async () => {
    const started = Date.now();
    w.tarball = execFileSync("bash", [path.join(PROJECT, "test/system/rootfs.sh")], {
      encoding: "utf8",
      timeout: 15 * 60_000,
    }).trim();
    console.log(`# system: root filesystem ready in ${Date.now() - started} ms (${w.tarball})`);
    w.run = startRun();
    w.ports = await freePorts();
    console.log(`# system: run ${w.run.id} in ${w.run.dir}, ports ${JSON.stringify(w.ports)}`);
    // Outside /tmp and /var/tmp: the unit's PrivateTmp would hide the origin from the agent.
    w.srv = mkdtempSync("/srv/deploy-agent-systest-");
    // The origin holds this working tree as it is (tracked and new files): the agent and the config repo.
    const tree = path.join(w.srv, "tree");
    const listed = execFileSync("git", ["ls-files", "-co", "--exclude-standard", "-z"], {
      cwd: PROJECT,
      encoding: "utf8",
    });
    for (const rel of listed.split("\0").filter(Boolean)) {
      const from = path.join(PROJECT, rel);
      if (!existsSync(from)) continue;
      mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
      copyFileSync(from, path.join(tree, rel));
    }
    usePorts(tree, w.ports);
    git(tree, "init", "-q", "-b", "main");
    git(tree, "add", "-A");
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "deploy-agent under test");
    w.origin = path.join(w.srv, "matrix.git");
    git(w.srv, "clone", "-q", "--bare", tree, w.origin);
    w.pusher = path.join(w.srv, "pusher");
    git(w.srv, "clone", "-q", w.origin, w.pusher);
    git(w.pusher, "config", "user.name", "Jared");
    git(w.pusher, "config", "user.email", "jared@lotusguild.org");

    w.hs = await startMatrixServer({
      roomId: ROOM,
      users: { [MATRIX_TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
      stateDefault: 50,
    });
    for (const key of TRANSFORMS) {
      w.hs.state.set(`uk.half-shot.matrix-hookshot.generic.hook/${key}`, {
        name: key,
        transformationFunction: "old",
      });
    }
  });

  after(async () => {
    await w.hs?.close();
    if (w.srv) rmSync(w.srv, { recursive: true, force: true });
    w.run?.remove();
  });

  describe("LXC 151: hookshot and LiveKit, migrated from webhook.service on its port", role("lxc151"), () => {
    let c: Container;
    const livekitPid = async () => (await c.show("livekit-server.service", "MainPID")).MainPID;
    const fn = (file: string) =>
      `${readFileSync(path.join(w.pusher, "hookshot/lib/prelude.js"), "utf8")}\n${readFileSync(path.join(w.pusher, "hookshot", file), "utf8")}`;

    before(async () => {
      c = await boot(w.run, "lxc151", w.tarball, [w.srv]);
      current = c;
      await prepareHost(c, w, { id: "matrix-deploy", port: w.ports.lxc151, secret: OLD_SECRET_151 });
      writeFileSync(
        c.file("/etc/matrix-deploy.env"),
        `MATRIX_TOKEN=${MATRIX_TOKEN}\nMATRIX_SERVER=${w.hs.url}\nMATRIX_ROOM=${ROOM}\n`,
        { mode: 0o600 },
      );
      mkdirSync(c.file("/etc/livekit"), { recursive: true });
      writeFileSync(
        c.file("/etc/livekit/config.yaml"),
        `port: 7880\nprometheus_port: ${w.ports.livekitMetrics}\nrtc:\n  tcp_port: ${w.ports.livekitRtc}\n`,
      );
      writeFileSync(c.file("/etc/livekit/participants"), "1\n"); // a call is on while the agent deploys
      copyFileSync(
        path.join(PROJECT, "test/system/standins/livekit-server.cjs"),
        c.file("/usr/local/bin/livekit-server"),
      );
      chmodSync(c.file("/usr/local/bin/livekit-server"), 0o755);
      writeFileSync(
        c.file("/etc/systemd/system/livekit-server.service"),
        "[Unit]\nDescription=LiveKit (the unit before this deploy)\n\n[Service]\nExecStart=/usr/local/bin/livekit-server --config /etc/livekit/config.yaml\n\n[Install]\nWantedBy=multi-user.target\n",
      );
      await c.sh("systemctl daemon-reload && systemctl enable -q --now livekit-server.service");
    });
    after(() => c?.destroy());

    it("a final restart that fails after webhook.service stopped: install puts webhook.service back, enabled and answering", async () => {
      // An operator's drop-in that lets the unit start on install's spare loopback port but not on the real
      // one: the trial passes, the restart on the real one fails (systemctl restart exits 1).
      const dropIn = c.file("/etc/systemd/system/deploy-agent@lxc151.service.d/zz-fail-on-real-port.conf");
      mkdirSync(path.dirname(dropIn), { recursive: true });
      writeFileSync(
        dropIn,
        "[Service]\nExecStartPre=/bin/sh -c 'case \"$$DEPLOY_AGENT_LISTEN\" in 127.0.0.1:*) exit 0;; esac; echo no real port; exit 1'\n",
      );
      const envBefore = readFileSync(c.file("/etc/matrix-deploy.env"), "utf8");
      const res = await install(c, w, "lxc151", { check: false });
      assert.equal(res.code, 1, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        /error INSTALL_FAILED: systemctl restart deploy-agent@lxc151\.service exited with code 1.*; webhook\.service is enabled and running again\n/s,
      );
      assert.equal(res.stderr.includes(OLD_SECRET_151), false, "install never prints the secret");
      const old = await c.show("webhook.service", "ActiveState", "UnitFileState");
      assert.deepEqual(old, { ActiveState: "active", UnitFileState: "enabled" });
      const agent = await c.show("deploy-agent@lxc151.service", "ActiveState", "LoadState");
      assert.notEqual(agent.ActiveState, "active");
      // Taken back with everything install wrote: no unit file left to start it at boot.
      assert.equal(agent.LoadState, "not-found");
      assert.equal(existsSync(c.file("/etc/systemd/system/deploy-agent@.service")), false);
      assert.equal(lstatSync(c.file("/usr/local/bin/deploy-agent"), { throwIfNoEntry: false }), undefined);
      assert.equal(
        readFileSync(c.file("/etc/matrix-deploy.env"), "utf8"),
        envBefore,
        "the env file as it was",
      );
      // The webhook binary answers its hook again (a delivery without a signature does not match its rule).
      await eventually(
        "the old listener on its port",
        async () =>
          (
            await fetch(`http://127.0.0.1:${w.ports.lxc151}/hooks/matrix-deploy`, { method: "POST" }).catch(
              () => null,
            )
          )?.status,
      );
      rmSync(dropIn);
      await c.sh("systemctl daemon-reload && systemctl reset-failed deploy-agent@lxc151.service || true");
    });

    it("systemd's EnvironmentFile= reads every value the agent writes as dotenv does", async () => {
      const text = Object.entries(HOSTILE_VALUES)
        .map(([k, v]) => `${envLine(k, v)}\n`)
        .join("");
      writeFileSync(c.file("/root/hostile.env"), text);
      const res = await c.sh(
        "systemd-run --quiet --wait --pipe -p EnvironmentFile=/root/hostile.env /usr/bin/node -e 'console.log(JSON.stringify(process.env))'",
      );
      const env = JSON.parse(res.stdout) as Record<string, string>;
      const read = Object.fromEntries(Object.keys(HOSTILE_VALUES).map((k) => [k, env[k]]));
      assert.deepEqual(read, HOSTILE_VALUES);
      assert.deepEqual(parse(text), HOSTILE_VALUES);
    });

    it("installs from the README, takes over webhook's secret, port and hook path, and stops it only then", async () => {
      const started = Date.now();
      const { stdout, stderr } = await install(c, w, "lxc151");
      const out = stdout + stderr;
      console.log(`# system: lxc151 install took ${Date.now() - started} ms`);
      assert.ok(existsSync(c.file("/etc/systemd/system/deploy-agent@lxc151.service.d/listen.conf")));
      assert.equal(out.includes(OLD_SECRET_151), false, "install never prints the secret");
      await assertRunning(c, "lxc151", w.ports.lxc151);
      const old = await c.show("webhook.service", "ActiveState", "UnitFileState");
      assert.deepEqual(old, { ActiveState: "inactive", UnitFileState: "disabled" });
      assert.equal(parse(readFileSync(c.file("/etc/matrix-deploy.env"))).WEBHOOK_SECRET, OLD_SECRET_151);
      assert.equal((await c.show("livekit-graceful-restart.timer", "ActiveState")).ActiveState, "active");
    });

    it("the start-up reconcile pushed every transform and installed the LiveKit unit, restart deferred during the call", async () => {
      const pid = await livekitPid();
      for (const key of TRANSFORMS) {
        await eventually(
          `transform ${key} in room state`,
          () =>
            w.hs.state.get(`uk.half-shot.matrix-hookshot.generic.hook/${key}`)?.transformationFunction ===
              fn(`${key}.js`) || undefined,
        );
      }
      assert.equal(
        readFileSync(c.file("/etc/systemd/system/livekit-server.service"), "utf8"),
        readFileSync(path.join(w.pusher, "systemd/livekit-server.service"), "utf8"),
      );
      await eventually("livekit-unit applied", () => applied(c, "livekit-unit"));
      assert.equal(
        (await c.sh("test -f /run/livekit-restart-pending", { check: false })).code,
        0,
        "restart flagged",
      );
      assert.equal(await livekitPid(), pid, "not restarted during a call");
    });

    it("a signed push on the old hook URL deploys the changed transform", async () => {
      const writes = w.hs.writes();
      const rev = push(
        w,
        {
          "hookshot/grafana.js": `${readFileSync(path.join(w.pusher, "hookshot/grafana.js"), "utf8")}// tuned\n`,
        },
        "grafana: tune",
      );
      assert.equal(await deliver(w.ports.lxc151, "/hooks/matrix-deploy", OLD_SECRET_151, rev), 202);
      await eventually(
        "the new grafana transform",
        () =>
          w.hs.state.get("uk.half-shot.matrix-hookshot.generic.hook/grafana")?.transformationFunction ===
            fn("grafana.js") || undefined,
      );
      assert.equal(w.hs.writes() - writes, 1, "only the changed connection is written");
      assert.equal(
        await deliver(w.ports.lxc151, "/hooks/matrix-deploy", "wrong-secret-wrong-secret", rev),
        401,
      );
    });

    it("systemctl stop ends the agent by itself with status 0", async () => {
      await c.sh("systemctl stop deploy-agent@lxc151.service");
      const p = await c.show(
        "deploy-agent@lxc151.service",
        "ActiveState",
        "Result",
        "ExecMainCode",
        "ExecMainStatus",
      );
      assert.deepEqual(p, {
        ActiveState: "inactive",
        Result: "success",
        ExecMainCode: "1",
        ExecMainStatus: "0",
      });
    });

    it("livekit-graceful-restart.timer fires the service: exit 0 during a call, a restart once the call ended", async () => {
      const pid = await livekitPid();
      // A run is over when the service is inactive again with a new exit time (systemd zeroes it at start).
      const ran = async () => {
        const p = await c.show(
          "livekit-graceful-restart.service",
          "ActiveState",
          "ExecMainExitTimestampMonotonic",
        );
        return p.ActiveState === "inactive" ? p.ExecMainExitTimestampMonotonic : "running";
      };
      // The installed timer fires 5 minutes after boot; a drop-in makes it fire a second after it starts.
      mkdirSync(c.file("/etc/systemd/system/livekit-graceful-restart.timer.d"), { recursive: true });
      writeFileSync(
        c.file("/etc/systemd/system/livekit-graceful-restart.timer.d/test.conf"),
        "[Timer]\nOnActiveSec=1s\n",
      );
      const fire = async () => {
        const before = await ran();
        await c.sh("systemctl daemon-reload && systemctl restart livekit-graceful-restart.timer");
        await eventually(
          "the timer's service to run",
          async () => (await ran().then((t) => t !== before && t !== "running" && t !== "0")) || undefined,
          30_000,
        );
        return c.show("livekit-graceful-restart.service", "Result", "ExecMainStatus");
      };
      assert.deepEqual(await fire(), { Result: "success", ExecMainStatus: "0" });
      assert.equal(await livekitPid(), pid, "call active: no restart");
      assert.equal(
        (await c.sh("test -f /run/livekit-restart-pending", { check: false })).code,
        0,
        "flag kept",
      );

      writeFileSync(c.file("/etc/livekit/participants"), "0\n");
      assert.deepEqual(await fire(), { Result: "success", ExecMainStatus: "0" });
      await eventually("LiveKit restarted", async () => ((await livekitPid()) !== pid ? true : undefined));
      assert.notEqual((await c.show("livekit-server.service", "ActiveState")).ActiveState, "failed");
      assert.equal(
        (await c.sh("test -f /run/livekit-restart-pending", { check: false })).code,
        1,
        "flag cleared",
      );
      // The job's own verdict: the unit's name alone ("Starting livekit-graceful-restart.service") says "restart".
      assert.match(
        await c.journal("-u livekit-graceful-restart.service"),
        /no call active \(.*\): restarted livekit-server\.service$/m,
      );
    });

    it("the journal has the logs and never a secret", async () => {
      await assertNoSecrets(c, OLD_SECRET_151, MATRIX_TOKEN);
    });

    it("journalctl -p filters the agent's lines by their level (syslog priorities under journald)", async () => {
      const all = await c.journal("-u 'deploy-agent*' -p debug");
      const warnings = await c.journal("-u 'deploy-agent*' -p warning");
      assert.match(
        all,
        /^\{"level":30,/m,
        "info lines are there, their priority prefix stripped by journald",
      );
      assert.doesNotMatch(warnings, /"level":(10|20|30),/, "-p warning shows no info or debug line");
      for (const line of all.split("\n").filter(Boolean)) {
        if (line.startsWith("{")) JSON.parse(line);
      }
    });
  });

  describe("LXC 106: Cinny, a fresh install", role("lxc106"), () => {
    let c: Container;
    let cinnyOrigin: string;

    before(async () => {
      // Cinny's dev branch, standing in for the real one: the same build commands, a tiny build.
      const src = path.join(w.srv, "cinny-src");
      mkdirSync(src, { recursive: true });
      writeFileSync(
        path.join(src, "package.json"),
        JSON.stringify({
          name: "cinny",
          version: "4.0.0",
          private: true,
          scripts: { build: "mkdir -p dist && echo '<p>cinny nightly</p>' > dist/index.html" },
        }),
      );
      writeFileSync(
        path.join(src, "package-lock.json"),
        JSON.stringify({
          name: "cinny",
          version: "4.0.0",
          lockfileVersion: 3,
          requires: true,
          packages: { "": { name: "cinny", version: "4.0.0" } },
        }),
      );
      git(src, "init", "-q", "-b", "dev");
      git(src, "add", "-A");
      git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "cinny dev");
      cinnyOrigin = path.join(w.srv, "cinny.git");
      git(w.srv, "clone", "-q", "--bare", src, cinnyOrigin);
      c = await boot(w.run, "lxc106", w.tarball, [w.srv]);
      current = c;
      await prepareHost(c, w);
      await c.sh(`git clone -q -b dev ${cinnyOrigin} /opt/cinny-dev`);
    });
    after(() => c?.destroy());

    it("installs from the README with a new private secret and the cron file", async () => {
      const { stdout: out } = await install(c, w, "lxc106");
      await assertRunning(c, "lxc106", w.ports.lxc106);
      const secret = readFileSync(c.file("/etc/deploy-agent/webhook-secret"), "utf8").trim();
      assert.match(secret, /^[0-9a-f]{64}$/);
      assert.equal((await c.sh("stat -c %a /etc/deploy-agent/webhook-secret")).stdout.trim(), "600");
      assert.equal(out.includes(secret), false, "install never prints the secret");
      assert.ok(existsSync(c.file("/etc/cron.d/cinny-dev-update")));
      await eventually("cinny-config applied", () => applied(c, "cinny-config"));
      assert.equal(
        readFileSync(c.file("/var/www/html/config.json"), "utf8"),
        readFileSync(path.join(w.pusher, "cinny/config.json"), "utf8"),
      );
      assert.equal((await c.sh("stat -c %a /usr/local/bin/cinny-dev-update.sh")).stdout.trim(), "755");
    });

    it("the Cinny cron command runs as cron would run it and switches the web root to the new build", async () => {
      const cron = readFileSync(c.file("/etc/cron.d/cinny-dev-update"), "utf8");
      const pathLine = /^PATH=(.*)$/m.exec(cron)?.[1];
      const command = cron
        .split("\n")
        .find((l) => /^\d/.test(l))
        ?.split(/\s+/)
        .slice(6)
        .join(" ");
      assert.ok(pathLine && command);
      await c.sh(`env -i SHELL=/bin/sh HOME=/root PATH='${pathLine}' /bin/sh -c '${command}'`, {
        timeoutMs: 5 * 60_000,
      });
      assert.equal(
        (await c.sh("readlink /var/www/html")).code,
        0,
        "the web root is a symlink to the live release",
      );
      // Read inside: the web root links to an absolute path of the container.
      assert.equal((await c.sh("cat /var/www/html/index.html")).stdout, "<p>cinny nightly</p>\n");
      assert.equal(
        (await c.sh("cat /var/www/html/config.json")).stdout,
        readFileSync(path.join(w.pusher, "cinny/config.json"), "utf8"),
        "the deployed config survives the rebuild",
      );
      assert.match(
        readFileSync(c.file("/var/log/cinny-dev-update.log"), "utf8"),
        /deployed cinny dev [0-9a-f]{12} to \/var\/www\/html/,
      );
    });

    it("a configuration error stops the unit with exit 2 and no restart loop", async () => {
      const unit = "deploy-agent@lxc106.service";
      await c.sh(
        "chmod 644 /etc/deploy-agent/webhook-secret && systemctl restart deploy-agent@lxc106.service",
        { check: false },
      );
      await c.waitUnit(unit, (p) => p.ActiveState === "failed", 30_000);
      await sleep(8000); // longer than RestartSec=5: a restart would have happened by now
      const p = await c.show(unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts");
      assert.deepEqual(p, {
        ActiveState: "failed",
        Result: "exit-code",
        ExecMainStatus: "2",
        NRestarts: "0",
      });
      assert.match(
        await c.journal(`-u ${unit} -n 20`),
        /error CONFIG_INVALID: webhook secret file \/etc\/deploy-agent\/webhook-secret is readable by others/,
      );
      await c.sh(
        "chmod 600 /etc/deploy-agent/webhook-secret && systemctl restart deploy-agent@lxc106.service",
      );
      await c.waitUnit(unit, (p) => p.ActiveState === "active");
      const secret = readFileSync(c.file("/etc/deploy-agent/webhook-secret"), "utf8").trim();
      await assertNoSecrets(c, secret);
    });
  });

  describe("LXC 139: the landing page with a real nginx, a fresh install", role("lxc139"), () => {
    let c: Container;
    let secret: string;

    before(async () => {
      c = await boot(w.run, "lxc139", w.tarball, [w.srv]);
      current = c;
      await prepareHost(c, w);
      mkdirSync(c.file("/var/www/matrix-landing"), { recursive: true });
      writeFileSync(c.file("/var/www/matrix-landing/index.html"), "<p>old page</p>\n");
      writeFileSync(
        c.file("/etc/nginx/sites-enabled/matrix-landing"),
        `server {\n  listen 127.0.0.1:${w.ports.landing};\n  root /var/www/matrix-landing;\n}\n`,
      );
      await c.sh("nginx -t -q && systemctl reload nginx");
    });
    after(() => c?.destroy());

    // nginx's reload closes the kept-alive connection fetch may reuse: a probe that meets it tries again.
    const page = () =>
      fetch(`http://127.0.0.1:${w.ports.landing}/`)
        .then((r) => r.text())
        .catch(() => "");

    it("installs from the README; the start-up reconcile puts the page live through nginx", async () => {
      await install(c, w, "lxc139");
      await assertRunning(c, "lxc139", w.ports.lxc139);
      secret = readFileSync(c.file("/etc/deploy-agent/webhook-secret"), "utf8").trim();
      const want = readFileSync(path.join(w.pusher, "landing/index.html"), "utf8");
      await eventually("the landing page from git", async () => ((await page()) === want ? true : undefined));
    });

    it("from a terminal after the prune, logs print pretty (pino-pretty is installed)", async () => {
      const res = await c.sh(
        "script -qec 'deploy-agent run --dry-run --all --config /opt/matrix-config/config/lxc139.yaml' /dev/null",
      );
      assert.doesNotMatch(res.stdout, /Cannot find module|"level":/);
      assert.match(res.stdout, /INFO/);
    });

    it("kill -9 of the main process: systemd restarts it and it converges on the next push", async () => {
      const unit = "deploy-agent@lxc139.service";
      // The unit's CacheDirectory= holds V8's code cache, root's and nobody else's; the restart uses it.
      const cache = await eventually("V8's code cache in the unit's cache directory", async () => {
        const { stdout } = await c.sh(
          "stat -c '%a %U %n' /var/cache/deploy-agent /var/cache/deploy-agent/agent-*.v8cache",
          { check: false },
        );
        return /\.v8cache\n$/.test(stdout) ? stdout : undefined;
      });
      assert.match(
        cache,
        /^700 root \/var\/cache\/deploy-agent\n600 root \/var\/cache\/deploy-agent\/agent-[0-9a-f]{16}\.v8cache\n$/,
      );
      const { MainPID } = await c.show(unit, "MainPID");
      await c.sh(`kill -9 ${MainPID}`);
      await c.waitUnit(
        unit,
        (p) => p.ActiveState === "active" && p.NRestarts === "1" && p.MainPID !== MainPID,
        60_000,
      );
      await eventually("/healthz after the restart", async () =>
        (await healthz(w.ports.lxc139)) === 200 ? true : undefined,
      );
      const listening = (await c.journal(`-u ${unit}`))
        .split("\n")
        .filter((l) => l.includes('"msg":"listening"'));
      assert.match(listening.at(-1) ?? "", /"codeCache":"used"/, listening.join("\n"));
      const rev = push(
        w,
        { "landing/index.html": "<!doctype html><title>Lotus Guild</title><p>new page</p>\n" },
        "landing: new page",
      );
      assert.equal(await deliver(w.ports.lxc139, "/hooks/deploy", secret, rev), 202);
      await eventually("the new page through nginx", async () =>
        (await page()).includes("new page") ? true : undefined,
      );
      await eventually(
        "landing-page applied at the pushed commit",
        () => applied(c, "landing-page") === rev[1] || undefined,
      );
      await assertNoSecrets(c, secret);
    });
  });

  describe("LXC 110: Draupnir, migrated from webhook.service with -template", role("lxc110"), () => {
    let c: Container;

    before(async () => {
      c = await boot(w.run, "lxc110", w.tarball, [w.srv]);
      current = c;
      const hook = { id: "draupnir-deploy", port: w.ports.lxc110, secret: OLD_SECRET_110, template: true };
      await prepareHost(c, w, hook);
      await c.sh(
        "useradd --system --home-dir /opt/draupnir draupnir && mkdir -p /opt/draupnir/lib /opt/draupnir/config /data/storage && chown draupnir: /data/storage",
      );
      copyFileSync(
        path.join(PROJECT, "test/system/standins/draupnir.cjs"),
        c.file("/opt/draupnir/lib/index.js"),
      );
      writeFileSync(c.file("/opt/draupnir/start-delay-ms"), "3000\n");
      const live = readFileSync(path.join(w.pusher, "draupnir/production.yaml"), "utf8").replace(
        /^accessToken:.*$/m,
        `accessToken: "${DRAUPNIR_TOKEN}"`,
      );
      writeFileSync(c.file("/opt/draupnir/config/production.yaml"), live, { mode: 0o600 });
      copyFileSync(
        path.join(w.pusher, "systemd/draupnir.service"),
        c.file("/etc/systemd/system/draupnir.service"),
      );
      await c.sh(
        "chown draupnir: /opt/draupnir/config/production.yaml && systemctl daemon-reload && systemctl enable -q --now draupnir.service",
      );
    });
    after(() => c?.destroy());

    const config = () => readFileSync(c.file("/opt/draupnir/config/production.yaml"), "utf8");

    it("installs from the README, migrating the old -template hook (getenv from its EnvironmentFile=); the reconcile keeps the live token", async () => {
      await install(c, w, "lxc110");
      await assertRunning(c, "lxc110", w.ports.lxc110);
      assert.equal((await c.show("webhook.service", "ActiveState")).ActiveState, "inactive");
      assert.equal(readFileSync(c.file("/etc/deploy-agent/webhook-secret"), "utf8").trim(), OLD_SECRET_110);
      await eventually("draupnir-config applied", () => applied(c, "draupnir-config"), 90_000);
      assert.match(config(), new RegExp(DRAUPNIR_TOKEN));
      assert.equal((await c.show("draupnir.service", "ActiveState")).ActiveState, "active");
    });

    it("systemctl stop while the step waits for Draupnir's health: the step finishes, exit 0", async () => {
      const unit = "deploy-agent@lxc110.service";
      const restartedAt = async () =>
        (await c.show("draupnir.service", "ActiveEnterTimestampMonotonic")).ActiveEnterTimestampMonotonic;
      const before = await restartedAt();
      const yaml = readFileSync(path.join(w.pusher, "draupnir/production.yaml"), "utf8");
      const rev = push(
        w,
        { "draupnir/production.yaml": `${yaml}# pushed during the system test\n` },
        "draupnir: comment",
      );
      assert.equal(await deliver(w.ports.lxc110, "/hooks/draupnir-deploy", OLD_SECRET_110, rev), 202);
      // Draupnir was restarted by the step, which now waits (3 s) for its /healthz: stop the agent now.
      await eventually(
        "Draupnir restarted by the step",
        async () => ((await restartedAt()) !== before ? true : undefined),
        30_000,
      );
      await c.sh(`systemctl stop ${unit}`);
      const p = await c.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus");
      assert.deepEqual(p, {
        ActiveState: "inactive",
        Result: "success",
        ExecMainCode: "1",
        ExecMainStatus: "0",
      });
      const journal = await c.journal(`-u ${unit}`);
      const stopping = journal.indexOf("shutting down");
      assert.ok(
        stopping > 0 && journal.indexOf('"msg":"step succeeded"', stopping) > stopping,
        journal.slice(-3000),
      );
      assert.equal(applied(c, "draupnir-config"), rev[1], "the step finished and was recorded");
      assert.match(config(), /# pushed during the system test/);
      assert.match(config(), new RegExp(DRAUPNIR_TOKEN));
      await c.sh(`systemctl start ${unit}`);
      await c.waitUnit(unit, (u) => u.ActiveState === "active");
      await assertNoSecrets(c, OLD_SECRET_110, DRAUPNIR_TOKEN);
    });

    it("goes back to webhook.service by the README's lines, and install takes over again", async () => {
      const readme = readFileSync(path.join(PROJECT, "README.md"), "utf8");
      const block = /<!-- webhook-back:begin[^>]*-->\n```sh\n([\s\S]*?)```\n<!-- webhook-back:end -->/.exec(
        readme,
      )?.[1];
      assert.ok(block, "README has the way back");
      const back = block.trim().replaceAll("deploy-agent@lxc151", "deploy-agent@lxc110");
      const res = await c.sh(`set -ex\n${back}`);
      assert.match(res.stdout, /^active$/m, "the README's last line says webhook.service is active");
      assert.deepEqual(await c.show("deploy-agent@lxc110.service", "ActiveState", "UnitFileState"), {
        ActiveState: "inactive",
        UnitFileState: "disabled",
      });
      assert.deepEqual(await c.show("webhook.service", "ActiveState", "UnitFileState"), {
        ActiveState: "active",
        UnitFileState: "enabled",
      });
      const readmeNow = readFileSync(path.join(w.pusher, "README.md"), "utf8");
      const rev = push(w, { "README.md": `${readmeNow}\n` }, "the way back");
      const status = await eventually("webhook.service answers a signed push", async () => {
        const code = await deliver(w.ports.lxc110, "/hooks/draupnir-deploy", OLD_SECRET_110, rev).catch(
          () => 0,
        );
        return code === 200 ? code : undefined;
      });
      assert.equal(status, 200);
      await eventually("the old script ran", async () =>
        (await c.journal("-u webhook.service")).includes("old deploy script") ? true : undefined,
      );
      await install(c, w, "lxc110");
      await assertRunning(c, "lxc110", w.ports.lxc110);
      assert.equal((await c.show("webhook.service", "ActiveState")).ActiveState, "inactive");
      assert.equal(readFileSync(c.file("/etc/deploy-agent/webhook-secret"), "utf8").trim(), OLD_SECRET_110);
    });
  });
});
