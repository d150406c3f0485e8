import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { type Agent, freePort, makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";

/**
 * LXC 139's landing page step against a real nginx on a loopback port: the copy, `nginx -t`, `nginx -s
 * reload`, and the restore when the test fails. Also the real landing page from this repository, served.
 */

let fx: Fixture;
let agent: Agent;
let conf: string;
let port: number;
let nginxArgs: string[];

// A new connection each time: nginx's reload closes the idle kept-alive one, and fetch's pool may hand
// out that socket in the instant before its close arrives ("other side closed").
const get = (p = "/") =>
  new Promise<{ status: number; type: string | null; text: string }>((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"] ?? null, text }),
      );
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${p}: no answer in 5 s`)));
    req.on("error", reject);
  });

describe("landing page through real nginx", {
  skip: needs("nginx", ["-v"], "apt-get install nginx; .ci/run does"),
}, () => {
  beforeEach(async () => {
    fx = makeFixture({ "landing/index.html": "<!doctype html><title>v1</title>\n" });
    const dir = path.join(fx.dir, "nginx");
    mkdirSync(path.join(dir, "tmp"), { recursive: true });
    port = await freePort();
    const manifestFile = writeManifest(fx.dir, { steps: [] });
    agent = makeAgent(fx.dir, fx.clone, manifestFile);
    const webroot = path.join(agent.root, "var/www/matrix-landing");
    mkdirSync(webroot, { recursive: true });
    conf = path.join(dir, "nginx.conf");
    writeFileSync(path.join(dir, "extra.conf"), "");
    writeFileSync(
      conf,
      // Workers as root: the temp directories are 0700, as mkdtemp makes them.
      `user root root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  include /etc/nginx/mime.types;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp; uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  include ${dir}/extra.conf;
  server { listen 127.0.0.1:${port}; root ${webroot}; index index.html; }
}
`,
    );
    nginxArgs = ["-c", conf, "-e", path.join(dir, "error.log")];
    writeManifest(fx.dir, {
      steps: [
        {
          name: "landing-page",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/matrix-landing/index.html"],
          mode: "0644",
          reload: [
            ["nginx", ...nginxArgs, "-t"],
            ["nginx", ...nginxArgs, "-s", "reload"],
          ],
        },
      ],
    });
    writeFileSync(path.join(webroot, "index.html"), "<!doctype html><title>v0</title>\n");
    execFileSync("nginx", nginxArgs);
  });

  afterEach(() => {
    spawnSync("nginx", [...nginxArgs, "-s", "stop"]);
    fx.cleanup();
  });

  it("deploys the page and reloads nginx, which serves it", async () => {
    assert.match((await get()).text, /v0/);
    const report = await agent.run();
    assert.equal(report.result, "succeeded", JSON.stringify(stepOf(report, "landing-page").error));
    assert.deepEqual(
      stepOf(report, "landing-page").effects.map((e) => (e.type === "run" ? e.argv.at(-1) : e.type)),
      ["write", "-t", "reload"],
    );
    const page = await get();
    assert.equal(page.status, 200);
    assert.equal(page.text, "<!doctype html><title>v1</title>\n");
  });

  it("a failing nginx -t restores the previous page, which nginx keeps serving", async () => {
    await agent.run();
    writeFileSync(path.join(fx.dir, "nginx/extra.conf"), "this_is_not_a_directive on;\n");
    fx.push({ "landing/index.html": "<!doctype html><title>v2</title>\n" });
    const step = stepOf(await agent.run(), "landing-page");
    assert.equal(step.outcome, "failed");
    assert.equal(step.error?.code, "COMMAND_FAILED");
    assert.match(
      step.error?.message ?? "",
      /nginx .* -t exited with code 1: .*unknown directive "this_is_not_a_directive"/,
    );
    assert.equal(
      readFileSync(path.join(agent.root, "var/www/matrix-landing/index.html"), "utf8"),
      "<!doctype html><title>v1</title>\n",
    );
    assert.match((await get()).text, /v1/);
  });

  it("serves this repository's landing/index.html as HTML", async () => {
    fx.push({ "landing/index.html": readFileSync("landing/index.html") });
    await agent.run();
    const page = await get();
    assert.equal(page.status, 200);
    assert.match(page.type ?? "", /^text\/html/);
    assert.match(page.text, /<title>Lotus Guild Matrix<\/title>/);
  });
});
