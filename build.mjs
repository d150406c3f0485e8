/**
 * `npm run build`: bundles src/bin.ts into dist/src/bin.js with esbuild, the daemon's start-up and idle
 * memory being the reason (#15). Node 20 resolves and compiles each of the ~400 files of fastify, zod,
 * pino, simple-git, yaml and prom-client one by one; one tree-shaken file starts in about half the time.
 * What src/ imports with `import()` (acorn for the hookshot step, the diff library for writes and drift,
 * the commands a daemon never runs) stays uninitialised until first use. One file, not split into chunks:
 * chunks cost the daemon about 2.5 MiB more at idle (Node's ESM loader per module) than they save.
 * Left outside the bundle, resolved from node_modules at run time: QuickJS (it loads its .wasm file beside
 * its own module), execa and pino-pretty (already loaded only when used).
 * Type checking stays with `tsc --noEmit` (npm run typecheck); esbuild only strips the types.
 */
import { chmodSync, rmSync } from "node:fs";
import { build } from "esbuild";

rmSync("dist", { recursive: true, force: true });
await build({
  entryPoints: { bin: "src/bin.ts" },
  outdir: "dist/src",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["quickjs-emscripten", "execa", "pino-pretty"],
  // The CommonJS dependencies (fastify, pino…) call require() for Node's own modules.
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  // Names stay (stack traces in the journal must be readable); whitespace and dead code go.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "none",
  logLevel: "warning",
});
chmodSync("dist/src/bin.js", 0o755);
