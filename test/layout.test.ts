import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import ts from "typescript";
import { PROJECT } from "./helpers/agent.js";

/**
 * The layout the folders promise, checked so it does not decay: no import circles in src/, only the entry
 * points loose at src/, no issue numbers in comments, and no service's name in the generic layers (what a
 * service needs lives in the step, job or content module that owns it).
 */

const SRC = path.join(PROJECT, "src");

/** Every .ts file under dir, as paths relative to src/ with forward slashes. */
function sources(dir = SRC): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => f.split(path.sep).join("/"))
    .sort();
}

const text = (file: string) => readFileSync(path.join(SRC, file), "utf8");

/** file → the src files it imports by relative path (static, dynamic, type-only and re-exports alike). */
function importGraph(files: readonly string[], read: (file: string) => string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const { importedFiles } = ts.preProcessFile(read(file), true, true);
    graph.set(
      file,
      importedFiles
        .map((i) => i.fileName)
        .filter((name) => name.startsWith("."))
        .map((name) => path.posix.join(path.posix.dirname(file), name).replace(/\.js$/, ".ts")),
    );
  }
  return graph;
}

/** The import circles of a graph, each as the files around it ending where it began; [] when there are none. */
function circles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const onPath: string[] = [];
  const visit = (file: string) => {
    const at = onPath.indexOf(file);
    if (at >= 0) {
      found.push([...onPath.slice(at), file]);
      return;
    }
    if (done.has(file)) return;
    onPath.push(file);
    for (const next of graph.get(file) ?? []) visit(next);
    onPath.pop();
    done.add(file);
  };
  for (const file of graph.keys()) visit(file);
  return found;
}

/** The comments of a TypeScript source, found by its parser (so a `#1` in a string or a regex is no comment). */
function comments(source: string): string[] {
  const file = ts.createSourceFile("x.ts", source, ts.ScriptTarget.Latest, false);
  const seen = new Map<number, string>();
  const collect = (ranges: ts.CommentRange[] | undefined) => {
    for (const r of ranges ?? []) seen.set(r.pos, source.slice(r.pos, r.end));
  };
  const walk = (node: ts.Node) => {
    collect(ts.getLeadingCommentRanges(source, node.getFullStart()));
    collect(ts.getTrailingCommentRanges(source, node.getEnd()));
    ts.forEachChild(node, walk);
  };
  walk(file);
  collect(ts.getLeadingCommentRanges(source, file.endOfFileToken.getFullStart()));
  return [...seen.values()];
}

/** This project's issue numbers; an upstream project's issue (`nodejs/node#57736`) is a reference, not one. */
const ISSUE_NUMBER = /(?<![\w.-]\/[\w.-]+)#\d+|\bissue \d+/i;

/** The layers below the steps and jobs: they serve every service and so name none. */
const GENERIC = ["core", "host", "state", "plan", "deploy", "source", "server", "notify", "matrix"];
const SERVICE_WORD = /hookshot|livekit|cinny|draupnir|synapse|landing|lxc\d+/i;

describe("layout", () => {
  it("src/ has no import circle", () => {
    const found = circles(importGraph(sources(), text));
    assert.deepEqual(
      found.map((c) => c.join(" → ")),
      [],
      "each import circle, file by file",
    );
  });

  it("only the entry points sit loose at src/ (the executable's start, the agent's entry, the CLI)", () => {
    const loose = readdirSync(SRC, { withFileTypes: true })
      .filter((e) => !e.isDirectory())
      .map((e) => e.name);
    assert.deepEqual(loose.sort(), ["bin.ts", "cli.ts", "start.ts"]);
  });

  it("no comment in src/ carries an issue number", () => {
    const found = sources().flatMap((file) =>
      comments(text(file))
        .filter((c) => ISSUE_NUMBER.test(c))
        .map((c) => `${file}: ${c}`),
    );
    assert.deepEqual(found, []);
  });

  it("the generic layers name no service", () => {
    const found = GENERIC.flatMap((dir) =>
      sources(path.join(SRC, dir)).flatMap((rel) => {
        const file = `${dir}/${rel}`;
        return text(file)
          .split("\n")
          .flatMap((line, i) => (SERVICE_WORD.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : []));
      }),
    );
    assert.deepEqual(found, []);
  });
});

describe("layout checks find what they look for", () => {
  it("a circle through three files, reported as the path around it", () => {
    const files: Record<string, string> = {
      "a/one.ts": 'import { two } from "../b/two.js";\n',
      "b/two.ts": 'import type { Three } from "./three.js";\nexport const two = 2;\n',
      "b/three.ts": 'export { one } from "../a/one.js";\n',
      "c/leaf.ts": 'import { two } from "../b/two.js";\nimport "node:fs";\n',
    };
    const graph = importGraph(Object.keys(files), (f) => files[f] ?? "");
    assert.deepEqual(circles(graph), [["a/one.ts", "b/two.ts", "b/three.ts", "a/one.ts"]]);
    assert.deepEqual(circles(new Map([["x.ts", ["y.ts"]]])), []);
  });

  it("comments, and not strings or regexes that look like them", () => {
    const source = [
      "// see #12",
      'const a = "#34"; /* issue 56 */',
      "const r = /#78/;",
      "/** A doc comment. */",
      "export const b = `// not a comment ${a}`;",
      "// the last line",
      "// upstream: nodejs/node#57736",
    ].join("\n");
    const found = comments(source);
    assert.deepEqual(found.filter((c) => ISSUE_NUMBER.test(c)).sort(), ["/* issue 56 */", "// see #12"]);
    assert.ok(found.includes("/** A doc comment. */") && found.includes("// the last line"), found.join("|"));
  });
});
