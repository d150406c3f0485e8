// The agent's entry point: bundled into dist/src/agent.cjs, which the executable (src/start.ts) runs; the
// tests run it from source. Kept apart from cli.ts so that the entry point never depends on how argv[1] is
// spelt (symlinks).
import { main } from "./cli.js";
import { printable } from "./core/printable.js";
import { redact } from "./core/redact.js";

// Reports and errors leave through the one redaction point, as log lines do, and reach the terminal
// without control characters: they carry text others wrote (commit and file content, a pin's reason, a
// host's answer). JSON escapes its own. No top-level await: the bundle is CommonJS.
void main(
  process.argv.slice(2),
  (t) => process.stdout.write(printable(redact(t))),
  (t) => process.stderr.write(printable(redact(t))),
).then((code) => {
  process.exitCode = code;
});
