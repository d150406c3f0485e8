#!/usr/bin/env -S node --
// The executable: npm links it into PATH (node_modules/.bin, npm i -g) and `deploy-agent install` links it
// to /usr/local/bin. Kept apart from cli.ts so that the entry point never depends on how argv[1] is spelt
// (symlinks). The `--` in the shebang ends Node's own options: Node 20 otherwise reads a `--env-file`
// meant for deploy-agent, loads that file itself and exits 9 when it is missing.
import { main } from "./cli.js";
import { redact } from "./core/redact.js";

// Reports and errors leave through the one redaction point, as log lines do.
process.exitCode = await main(
  process.argv.slice(2),
  (t) => process.stdout.write(redact(t)),
  (t) => process.stderr.write(redact(t)),
);
