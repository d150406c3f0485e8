import { execFile } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { stringify } from "yaml";
import { type CliResult, freePort, runCli } from "./agent.js";
import { type Fixture, git, makeFixture } from "./git.js";
import { giteaHeaders, pushBody } from "./gitea.js";
import { installUnitRunner, type UnitRunner } from "./unit-runner.js";

/**
 * A host root for `deploy-agent install` (host lxctest): the config clone under /opt/matrix-config, the
 * directories install writes to, and the stand-in systemctl that runs its units (unit-runner.ts). The legacy
 * webhook binary's unit and hooks file as the Lotus Guild hosts have them (oldWebhook).
 */
export interface InstallHost {
  fx: Fixture;
  root: string;
  systemctl: UnitRunner;
  install(...extra: string[]): Promise<CliResult>;
  /** Stops the units the stand-in started and removes the fixture. */
  cleanup(): Promise<void>;
}

export async function makeInstallHost(extra: Record<string, unknown> = {}): Promise<InstallHost> {
  const manifest = {
    version: 1,
    host: "lxctest",
    listen: { host: "127.0.0.1", port: await freePort() },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
    ...extra,
  };
  const fx = makeFixture({
    "landing/index.html": "<p>v1</p>\n",
    "config/lxctest.yaml": stringify(manifest),
  });
  const root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "opt"), { recursive: true });
  git(fx.dir, "clone", "--quiet", fx.origin, path.join(root, "opt/matrix-config"));
  for (const d of ["etc/systemd/system", "usr/local/bin", "var/www"])
    mkdirSync(path.join(root, d), { recursive: true });
  const systemctl = installUnitRunner(root);
  return {
    fx,
    root,
    systemctl,
    install: (...more) => runCli(["install", "--host", "lxctest", "--root", root, ...more]),
    async cleanup() {
      await systemctl.restore();
      fx.cleanup();
    },
  };
}

/** The manifest of a host migrating from webhook.service: the secret in LXC 151's env file. */
export const MIGRATING = { envFile: "/etc/matrix-deploy.env", webhook: { secretEnv: "WEBHOOK_SECRET" } };

/**
 * A host still running the webhook binary: its unit (ExecStart flags as Debian's webhook takes them, extra
 * unit lines for its environment) and hooks file (text, as written: a template is not valid JSON), enabled
 * and started unless `state` says otherwise (only enabled, only running, masked and stopped).
 */
export async function oldWebhook(
  root: string,
  o: {
    hooks: string;
    flags?: string;
    unitLines?: string;
    port: number;
    state?: "enabled" | "running" | "masked";
  },
) {
  mkdirSync(path.join(root, "etc/webhook"), { recursive: true });
  writeFileSync(path.join(root, "etc/webhook/hooks.json"), o.hooks, { mode: 0o600 });
  writeFileSync(
    path.join(root, "etc/systemd/system/webhook.service"),
    `[Service]\nExecStart=/usr/bin/webhook -hooks /etc/webhook/hooks.json -port ${o.port} -ip 127.0.0.1 ${o.flags ?? ""} -verbose\n${o.unitLines ?? ""}`,
  );
  if (!existsSync(path.join(root, "etc/matrix-deploy.env")))
    writeFileSync(path.join(root, "etc/matrix-deploy.env"), "MATRIX_TOKEN=syt_abc\n", { mode: 0o600 });
  const how = { enabled: ["enable"], running: ["start"], masked: ["mask"] }[o.state ?? "enabled"];
  if (!o.state) how.push("--now");
  await runCommand("systemctl", [...how, "webhook.service"]);
}

export const hooksJson = (secretJson: string) =>
  `[{"id": "matrix-deploy", "execute-command": "/usr/local/bin/matrix-deploy.sh", "trigger-rule": {"and": [
  {"match": {"type": "payload-hmac-sha256", "secret": ${secretJson}, "parameter": {"source": "header", "name": "X-Gitea-Signature"}}},
  {"match": {"type": "value", "value": "refs/heads/main", "parameter": {"source": "payload", "name": "ref"}}}]}}]\n`;

export function runCommand(file: string, args: string[]): Promise<string> {
  return new Promise((done, fail) =>
    execFile(file, args, (err, stdout) => (err ? fail(err) : done(String(stdout)))),
  );
}

/** What systemctl says of a unit: its enablement and whether it runs (a "no" exits non-zero: still an answer). */
export async function unitNow(unit: string): Promise<{ enabled: string; active: string }> {
  const ask = (verb: string) =>
    new Promise<string>((done) =>
      execFile("systemctl", [verb, unit], (_, stdout) => done(String(stdout).trim())),
    );
  return { enabled: await ask("is-enabled"), active: await ask("is-active") };
}

/** A signed Gitea push to another branch (acknowledged, nothing deployed): its HTTP status. */
export async function signedDelivery(
  port: number,
  secret: string,
  hook = "/hooks/matrix-deploy",
): Promise<number> {
  const body = pushBody({ ref: "refs/heads/other", after: "1".repeat(40) });
  const res = await fetch(`http://127.0.0.1:${port}${hook}`, {
    method: "POST",
    headers: giteaHeaders(body, secret),
    body: new Uint8Array(body),
  });
  await res.body?.cancel();
  return res.status;
}
