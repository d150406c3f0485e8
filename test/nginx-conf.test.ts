import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { confineNginxPaths, nginxDirectives } from "../src/content/nginx-conf.js";
import { needs } from "./helpers/needs.js";

/**
 * The plan's reading of a configuration's includes, held against nginx's own: each spelling below is put
 * inside http {} and run through `nginx -t`; the include happened when nginx reports an error in the
 * included file, which is invalid in every context. What matters most is that nothing nginx includes is
 * missed.
 */
let dir: string;
let target: string;

/** The files the directives read include, as nginx runs include (one argument, ended by `;`). */
const nginxIncludes = (text: string) =>
  nginxDirectives(text)
    .filter((d) => d.name === "include" && d.args.length === 1)
    .map((d) => d.args[0]);

/** Whether nginx itself includes the target for this snippet. */
function nginxIncludesIt(snippet: string): boolean {
  const own = path.join(dir, "snippet.conf");
  const conf = path.join(dir, "nginx.conf");
  writeFileSync(own, snippet.replaceAll("TARGET", target));
  writeFileSync(
    conf,
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  include ${own};\n}\n`,
  );
  const run = spawnSync("nginx", ["-t", "-p", `${dir}/`, "-c", conf, "-e", `${dir}/error.log`], {
    encoding: "utf8",
  });
  return run.stderr.includes(`${target}:1`);
}

const INCLUDED = [
  "include TARGET;",
  '"include" TARGET;',
  "'include' \"TARGET\" ;",
  "include\tTARGET\n;",
  "include\r\nTARGET;\r\n",
  'server { listen 127.0.0.1:9; location / { return 200 "}"; } include TARGET; }',
  "add_header X-A a#b;\ninclude TARGET;",
  'add_header X-A "a";# a comment\ninclude TARGET;',
  "map $uri $m { default 1; include TARGET; }",
  "types { include TARGET; }",
  "include 'TARGET';",
  'add_header X-A "${a}{";\ninclude TARGET;',
];

const NOT_INCLUDED = [
  "# include TARGET;",
  "inc\\lude TARGET;",
  "\\include TARGET;",
  'inc"lude" TARGET;',
  "INCLUDE TARGET;",
  "include TARGET",
  "include TARGET TARGET;",
  "include TARGET {",
  '"include"TARGET;',
  "add_header X-A a; # include TARGET;",
];

describe("an nginx configuration's includes, as nginx reads them", {
  skip: needs("nginx", ["-v"], "apt-get install nginx; .ci/run does"),
}, () => {
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "nginx-conf-"));
    target = path.join(dir, "included.conf");
    writeFileSync(target, "{ invalid in any context\n");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const snippet of INCLUDED)
    it(`finds the include nginx makes: ${JSON.stringify(snippet)}`, () => {
      assert.equal(nginxIncludesIt(snippet), true, "nginx includes it (the case is what it claims)");
      assert.deepEqual(nginxIncludes(snippet.replaceAll("TARGET", target)), [target]);
    });

  for (const snippet of NOT_INCLUDED)
    it(`finds none where nginx makes none: ${JSON.stringify(snippet)}`, () => {
      assert.equal(nginxIncludesIt(snippet), false, "nginx does not include it (the case is what it claims)");
      assert.deepEqual(nginxIncludes(snippet.replaceAll("TARGET", target)), []);
    });

  it("an empty or blank configuration includes nothing", () => {
    assert.deepEqual(nginxIncludes(""), []);
    assert.deepEqual(nginxIncludes(" \n\t# only a comment"), []);
  });
});

describe("the paths nginx -t would make, put under its prefix (confineNginxPaths)", () => {
  const KEPT = [
    "access_log off;",
    "error_log stderr warn;",
    "access_log syslog:server=127.0.0.1 combined;",
    "error_log memory:1m debug;",
    "server { listen 127.0.0.1:8080; }",
    "# access_log /x/a.log;",
    "add_header X-A access_log;",
    "access_log /x/a.log",
  ];
  for (const snippet of KEPT)
    it(`leaves alone what names no path: ${JSON.stringify(snippet)}`, () => {
      assert.deepEqual(confineNginxPaths(snippet), { text: snippet, files: [], dirs: [], sockets: [] });
    });

  const MOVED: [string, string][] = [
    ["access_log /x/a.log;", "access_log logs/1.log;"],
    ['"access_log" "/x/a.log" combined;', '"access_log" "logs/1.log" combined;'],
    ["'error_log' '../../x' warn;", "'error_log' 'logs/1.log' warn;"],
    ["access_log\r\n/x/$host.log\t;", "access_log\r\nlogs/1.log\t;"],
    ["access_log /x/a\\;b;", "access_log logs/1.log;"],
    ['access_log "/x/\\"a";', 'access_log "logs/1.log";'],
    [
      "proxy_cache_path /x/c levels=1:2 keys_zone=z:1m;",
      "proxy_cache_path paths/1 levels=1:2 keys_zone=z:1m;",
    ],
    [
      "server { listen unix:/x/s.sock; access_log /x/a; location / { client_body_temp_path /x/b 1; } }",
      "server { listen unix:sockets/1.sock; access_log logs/2.log; location / { client_body_temp_path paths/3 1; } }",
    ],
  ];
  for (const [snippet, confined] of MOVED)
    it(`moves what nginx -t would make: ${JSON.stringify(snippet)}`, () => {
      assert.equal(confineNginxPaths(snippet)?.text, confined);
    });
});
