import type { Node } from "acorn";
import type { QuickJSSyncVariant, QuickJSWASMModule } from "quickjs-emscripten-core";

/**
 * Hookshot's transformation sandbox, reproduced: the same QuickJS build, the same compile check
 * (`function f(data) {src}`, compile only), the same execution wrapper
 * (`const data = <json>;\n(() => { src })();` with a 500 ms deadline, reading the global `result`)
 * and the same rules for the result. A transform that passes here behaves the same in hookshot.
 */

export const TRANSFORMATION_TIMEOUT_MS = 500;

// Loaded on first use: agents without a hookshot step never carry QuickJS. The build hookshot uses
// (quickjs-emscripten's default, release-sync), named directly: the package that bundles all four builds
// makes the check's child parse them all.
let module: Promise<QuickJSWASMModule> | undefined;
function quickjs(): Promise<QuickJSWASMModule> {
  module ??= import("quickjs-emscripten-core").then((core) =>
    core.newQuickJSWASMModuleFromVariant(releaseSync()),
  );
  return module;
}

/**
 * Loads QuickJS (its WebAssembly compiled) and acorn now: a check's child started ahead of its batch does
 * this while it waits.
 */
export async function loadSandbox(): Promise<void> {
  await Promise.all([quickjs(), import("acorn"), import("acorn-walk")]);
}

async function releaseSync(): Promise<QuickJSSyncVariant> {
  const m = await import("@jitl/quickjs-wasmfile-release-sync");
  // Its types describe the CommonJS file (a default inside the default); Node loads the ESM one.
  return m.default as unknown as QuickJSSyncVariant;
}

/** The error hookshot would report for this source, or null when it compiles. */
export async function compileError(src: string): Promise<string | null> {
  const ctx = (await quickjs()).newContext();
  try {
    const res = ctx.evalCode(`function f(data) {${src}}`, "transform.js", { compileOnly: true });
    try {
      if (res.error) {
        const e = ctx.dump(res.error) as { name?: string; message?: string; lineNumber?: number };
        return `${e.name ?? "Error"}: ${e.message ?? JSON.stringify(e)}${e.lineNumber ? ` (line ${e.lineNumber})` : ""}`;
      }
      return null;
    } finally {
      res.dispose();
    }
  } finally {
    ctx.dispose();
  }
}

/**
 * `var result`, `let result` or `const result` at any depth makes the global `result` stay unset, and
 * hookshot then posts "No content". Read from acorn's syntax tree, so comments, strings and template
 * literals never trigger it and destructuring does.
 */
export async function declaresResult(src: string): Promise<boolean> {
  // Loaded on first use, like QuickJS: only LXC 151's agent checks transforms.
  const [{ parse }, { simple }] = await Promise.all([import("acorn"), import("acorn-walk")]);
  let ast: Node;
  try {
    // Parsed as hookshot runs it: the body of a function (so `return` is allowed).
    ast = parse(`(function () {\n${src}\n})`, { ecmaVersion: "latest", sourceType: "script" });
  } catch {
    return false; // not JavaScript at all: the compile check reports that
  }
  let found = false;
  simple(ast, {
    VariableDeclarator(node) {
      if (bindsResult((node as Node & { id: Node }).id)) found = true;
    },
  });
  return found;
}

/** Whether a binding pattern (`result`, `{ result }`, `[a, result]`, `{ x: result = 1 }`, …) binds `result`. */
function bindsResult(pattern: Node | null | undefined): boolean {
  if (!pattern) return false;
  const p = pattern as Node & Record<string, unknown>;
  switch (p.type) {
    case "Identifier":
      return p.name === "result";
    case "ObjectPattern":
      return (p.properties as (Node & { value?: Node; argument?: Node })[]).some((prop) =>
        bindsResult(prop.type === "RestElement" ? prop.argument : prop.value),
      );
    case "ArrayPattern":
      return (p.elements as (Node | null)[]).some(bindsResult);
    case "AssignmentPattern":
      return bindsResult(p.left as Node);
    case "RestElement":
      return bindsResult(p.argument as Node);
    default:
      return false;
  }
}

/** Why hookshot would refuse or mangle this transform, or null when it is fine. */
export async function transformProblem(src: string): Promise<string | null> {
  const compile = await compileError(src);
  if (compile) return `does not compile in hookshot's QuickJS: ${compile}`;
  if (await declaresResult(src)) {
    return 'declares `result` with var/let/const; hookshot reads the global `result`, so every message would be "No content"';
  }
  return null;
}

export interface TransformOutput {
  /** null when the transform asked for no message (`empty: true`). */
  content: { plain: string; html?: string; msgtype?: string } | null;
}

/** Runs a transform on a payload exactly as hookshot does; throws hookshot's error text on failure. */
export async function runTransform(src: string, data: unknown): Promise<TransformOutput> {
  const { shouldInterruptAfterDeadline } = await import("quickjs-emscripten-core");
  const ctx = (await quickjs()).newContext();
  ctx.runtime.setInterruptHandler(shouldInterruptAfterDeadline(Date.now() + TRANSFORMATION_TIMEOUT_MS));
  let result: unknown;
  try {
    ctx.setProp(ctx.global, "HookshotApiVersion", ctx.newString("v2"));
    const res = ctx.evalCode(`const data = ${JSON.stringify(data)};\n(() => { ${src} })();`);
    if (res.error) {
      const dumped = JSON.stringify(ctx.dump(res.error));
      res.error.dispose();
      throw new Error(`Transformation failed to run: ${dumped}`);
    }
    const value = ctx.getProp(ctx.global, "result");
    result = ctx.dump(value);
    value.dispose();
    res.value.dispose();
  } finally {
    ctx.dispose();
  }
  if (typeof result === "string") return { content: { plain: `Received webhook: ${result}` } };
  if (typeof result !== "object" || result === null) return { content: { plain: "No content" } };
  const r = result as Record<string, unknown>;
  if (r.version !== "v2") throw new Error("Result returned from transformation didn't specify version = v2");
  if (r.empty) return { content: null };
  if (typeof r.plain !== "string")
    throw new Error("Result returned from transformation didn't provide a string value for plain");
  if (r.html !== undefined && typeof r.html !== "string") {
    throw new Error("Result returned from transformation didn't provide a string value for html");
  }
  if (r.msgtype !== undefined && typeof r.msgtype !== "string") {
    throw new Error("Result returned from transformation didn't provide a string value for msgtype");
  }
  return {
    content: {
      plain: r.plain,
      ...(r.html !== undefined ? { html: r.html as string } : {}),
      ...(r.msgtype !== undefined ? { msgtype: r.msgtype as string } : {}),
    },
  };
}
