/**
 * `npm run build`: bundles src/bin.ts into dist/src/agent.cjs with esbuild, the daemon's start-up and idle
 * memory being the reason, and builds the executable dist/src/bin.js (src/start.ts) that runs it. Node 20
 * resolves and compiles each of the ~400 files of fastify, zod, pino, simple-git, yaml and prom-client one by
 * one; one tree-shaken file starts in about half the time, and, CommonJS, it can be compiled with V8's code
 * cache (src/start.ts). What src/ imports with `import()` (the diff library for writes and drift, the
 * commands a daemon never runs) stays uninitialised until first use. One file, not split into chunks: chunks
 * cost the daemon about 2.5 MiB more at idle (Node's ESM loader per module) than they save.
 * Left outside the bundle, resolved from node_modules at run time, because V8 parses the whole file at
 * every start whether or not a part ever runs:
 * - QuickJS and acorn with acorn-walk, which only the hookshot transform checks' child process loads, never
 *   the daemon (the child is its own bundle, below);
 * - pino-pretty, loaded only when used, and parse5, for `check: html` (vendored, below);
 * - fastify's ajv and fast-json-stringify compilers (330 KiB with their dependencies): no route has a JSON
 *   schema, and src/server/app.ts gives fastify factories that never load them;
 * - light-my-request (fastify's inject(), for tests);
 * - age-encryption and its @noble/@scure dependencies (about 140 ms to load), for `secret` steps and commands
 *   only: src/secrets/age.ts imports it on first use, so a host without secrets never loads it (vendored).
 * The diff library stays inside: loaded on its own it cost 4 MiB more at idle than the 40 KiB it adds here.
 * Measured together: the file went from 2.3 MB to 1.4 MB, start-up about 30 ms faster, idle RSS 2 to
 * 9 MiB lower.
 * Type checking stays with `tsc --noEmit` (npm run typecheck); esbuild only strips the types.
 */
import { chmodSync, copyFileSync, rmSync, writeFileSync } from "node:fs";
import Module, { createRequire } from "node:module";
import path from "node:path";
import { build } from "esbuild";

/**
 * zod re-exports its ~50 message locales as `z.locales` (300 KiB, an eighth of the bundle); the agent
 * uses zod's built-in English messages, which zod imports on its own, so the table is an empty module.
 */
const zodWithoutLocales = {
  name: "zod-without-locales",
  setup(b) {
    b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) =>
      args.importer.includes(`${path.sep}zod${path.sep}`)
        ? { path: args.path, namespace: "zod-locales" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "zod-locales" }, () => ({ contents: "export {};", loader: "js" }));
  },
};

/**
 * prom-client's index also loads its Pushgateway (node:https, node:zlib), cluster aggregator (node:cluster) and
 * Summary, which the agent never uses; only the parts src/server/metrics.ts imports are bundled.
 */
const promClientCore = {
  name: "prom-client-core",
  setup(b) {
    b.onResolve({ filter: /^prom-client$/ }, () => ({ path: "prom-client", namespace: "prom-client-core" }));
    b.onLoad({ filter: /.*/, namespace: "prom-client-core" }, () => ({
      contents: [
        'import Registry from "prom-client/lib/registry.js";',
        'import Counter from "prom-client/lib/counter.js";',
        'import Gauge from "prom-client/lib/gauge.js";',
        'import Histogram from "prom-client/lib/histogram.js";',
        'import collectDefaultMetrics from "prom-client/lib/defaultMetrics.js";',
        "export { Registry, Counter, Gauge, Histogram, collectDefaultMetrics };",
      ].join("\n"),
      loader: "js",
      resolveDir: process.cwd(),
    }));
  },
};

/**
 * fastify requires node:http2 (and node:https) at load for servers the agent never makes (HTTP/2, TLS); the
 * module is only read on first use, so a daemon on plain HTTP never loads them.
 */
const lazyBuiltins = {
  name: "lazy-builtins",
  setup(b) {
    b.onResolve({ filter: /^node:(http2|https)$/ }, (args) =>
      args.importer.includes(`${path.sep}fastify${path.sep}lib${path.sep}server.js`)
        ? { path: args.path, namespace: "lazy-builtin" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "lazy-builtin" }, (args) => ({
      contents: `let m; const load = () => (m ??= require(${JSON.stringify(args.path)})); module.exports = new Proxy({}, { get: (_, k) => load()[k], has: (_, k) => k in load() });`,
      loader: "js",
    }));
  },
};

/**
 * The ESM-only packages the bundle leaves outside (above) are each bundled on their own into a CommonJS file
 * in dist/src/vendor/, and the bundle's `import()` of them becomes a `require()` of that file, made on first
 * use as before: code compiled by node:vm (the start-up below) cannot `import()` on Node 20 without a flag
 * or an experimental warning, and Node 20 before 20.19 cannot `require()` an ES module.
 */
const VENDORED = ["age-encryption", "parse5"];
const vendored = {
  name: "vendored",
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${VENDORED.join("|")})$`) }, (args) => ({
      path: `./vendor/${args.path}.cjs`,
      external: true,
    }));
  },
};

/** What every file built here shares: for Node 20, everything it imports inside. */
const node20 = {
  outdir: "dist/src",
  bundle: true,
  platform: "node",
  target: "node20",
  legalComments: "none",
  logLevel: "warning",
};
/** Names stay (stack traces in the journal must be readable); whitespace and dead code go. */
const minified = { ...node20, minifyWhitespace: true, minifySyntax: true };
/**
 * Every file in dist/src is CommonJS (dist/src/package.json says so): Node starts a CommonJS entry without
 * its ES module loader, 10–25 ms sooner, and the daemon and the transform check's child are each started
 * per start and per check. import.meta as in an ES module: the file's URL, for paths beside the code; no
 * resolve() (the tests run from source only).
 */
const commonjs = {
  format: "cjs",
  // import() of what stays outside becomes require(), still made on first use (see vendored).
  supported: { "dynamic-import": false },
  banner: { js: 'const __importMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
  define: { "import.meta.url": "__importMetaUrl", "import.meta.resolve": "undefined" },
};
/**
 * The banner is a statement, so esbuild's "use strict" after it is no directive and the file runs sloppy.
 * The executable and the child were ES modules, strict throughout; they stay strict. (agent.cjs has run
 * sloppy since it became CommonJS, with CommonJS packages inside that may rely on it: left so.)
 */
const strict = { js: `"use strict";${commonjs.banner.js}` };

/**
 * The agent's file is CommonJS's function wrapper with the module inside, as Node's loader would wrap it
 * (Module.wrap): src/start.ts compiles the file's text as it is read. Joining the wrapper on at start made V8
 * flatten a second copy of the 1.5 MB source, about 380 more pages touched at every start. The file is no
 * longer a module on its own (`node dist/src/agent.cjs` defines the function and runs nothing): the
 * executable, dist/src/bin.js, is the one way in.
 */
const [wrapperOpen, wrapperClose] = Module.wrap("\0").split("\0");

rmSync("dist", { recursive: true, force: true });
/**
 * The agent: CommonJS, so that the start-up (src/start.ts, dist/src/bin.js) can compile it with V8's code
 * cache, which Node 20 offers for scripts (node:vm) and not for ES modules.
 */
await build({
  ...minified,
  ...commonjs,
  banner: { js: `${wrapperOpen}${commonjs.banner.js}` },
  footer: { js: wrapperClose },
  entryPoints: { agent: "src/bin.ts" },
  outExtension: { ".js": ".cjs" },
  external: [
    "quickjs-emscripten-core",
    "@jitl/quickjs-wasmfile-release-sync",
    "pino-pretty",
    "acorn",
    "acorn-walk",
    "light-my-request",
    "@fastify/ajv-compiler",
    "@fastify/fast-json-stringify-compiler",
  ],
  plugins: [zodWithoutLocales, promClientCore, lazyBuiltins, vendored],
});
for (const name of VENDORED) {
  await build({
    ...minified,
    entryPoints: { [`vendor/${name}`]: name },
    outExtension: { ".js": ".cjs" },
    format: "cjs",
  });
}
/** The executable: a small file that compiles and runs the agent (src/start.ts). */
await build({ ...node20, ...commonjs, banner: strict, entryPoints: { bin: "src/start.ts" } });
chmodSync("dist/src/bin.js", 0o755);
writeFileSync("dist/src/package.json", `${JSON.stringify({ type: "commonjs" })}\n`);

/**
 * The hookshot transform checks' child process (src/hookshot/checks.ts starts it from beside bin.js), with
 * everything it runs in one file: resolving QuickJS and acorn from node_modules, file by file, took the
 * child 40–65 ms of its 260 ms. QuickJS's WebAssembly stays a file of its own, beside the child, where the
 * module looks for it (next to itself).
 */
await build({
  ...minified,
  ...commonjs,
  banner: strict,
  entryPoints: { "hookshot-sandbox": "src/hookshot/sandbox.ts" },
});
copyFileSync(
  createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm"),
  "dist/src/emscripten-module.wasm",
);
