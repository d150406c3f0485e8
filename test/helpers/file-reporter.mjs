import path from "node:path";

/**
 * A reporter for `node --test` (package.json's test script, beside spec): one line per test file the moment
 * the file finishes, with its time, and the total at the end. Node's own reporters print files in the order
 * given, so one slow file early in the list hides every other result for minutes. Failures are spec's to
 * print in full; this one names the file that failed. Plain JavaScript: node loads reporters before tsx's
 * loader is in place.
 */

/** The runner reports each file as a test named by its path. */
const isFile = (data) => data.file !== undefined && data.name === data.file;

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

/** @param {AsyncIterable<import("node:test/reporters").TestEvent>} source */
export default async function* fileReporter(source) {
  const started = performance.now();
  let files = 0;
  let failed = 0;
  for await (const event of source) {
    // A file's own test:complete comes when its process ends, whatever the order the files were given in.
    if (event.type !== "test:complete" || !isFile(event.data)) continue;
    const { name, details } = event.data;
    files++;
    if (details?.passed === false) failed++;
    const file = path.relative(process.cwd(), name);
    yield `# file ${details?.passed === false ? "FAIL" : "ok  "} ${file} in ${seconds(details?.duration_ms ?? 0)}\n`;
  }
  yield `# files: ${files} in ${seconds(performance.now() - started)}, ${failed} failed\n`;
}
