import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { lstat, mkdtemp, open, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { MIN_LENGTH } from "../core/redact.js";
import { MAX_SECRET_BYTES } from "../secrets/catalog.js";

/**
 * A secret's value for `secret set`, held in memory only: from stdin when it is a pipe (one trailing line
 * break dropped unless `raw`), else typed at the terminal with echo off. At most MAX_SECRET_BYTES; empty or
 * shorter than the redaction point matches (it could not be kept out of logs) is refused.
 */
export async function readSecretValue(
  input: NodeJS.ReadStream,
  prompt: (text: string) => void,
  opts: { raw: boolean; name: string; editor?: boolean },
): Promise<string> {
  const value = opts.editor
    ? await readFromEditor(opts.raw, prompt)
    : input.isTTY
      ? await readHidden(input, prompt, opts.name)
      : await readPipe(input, opts.raw);
  if (!value)
    throw new AgentError("USAGE", `no value given for ${opts.name}`, {
      hint: "pipe it in: … | deploy-agent secret set NAME",
    });
  if (value.length < MIN_LENGTH) {
    throw new AgentError("USAGE", `the value for ${opts.name} is shorter than ${MIN_LENGTH} characters`, {
      hint: "a value that short cannot be told apart from ordinary words in logs; use a longer one",
    });
  }
  return value;
}

const tooLarge = () =>
  new AgentError("USAGE", `the value is larger than ${MAX_SECRET_BYTES} bytes; refused`, {
    hint: "secrets are tokens, keys and small config files",
  });

/**
 * A value's bytes as text, exactly: bytes that are not UTF-8 are refused (they would be stored as U+FFFD and
 * the host would get other bytes than were given), and a leading byte order mark is kept, as the host
 * decrypts it, so both ends show one fingerprint.
 */
export function valueText(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new AgentError("USAGE", "the value is not UTF-8 text; refused", {
      hint: "secrets are text (env lines, YAML, files read as text): give binary as base64",
    });
  }
}

async function readPipe(input: NodeJS.ReadStream, raw: boolean): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of input) {
    size += (chunk as Buffer).length;
    if (size > MAX_SECRET_BYTES + 2) {
      input.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  let text = valueText(Buffer.concat(chunks));
  if (!raw) text = text.replace(/\r?\n$/, "");
  if (Buffer.byteLength(text) > MAX_SECRET_BYTES) throw tooLarge();
  return text;
}

/** One line typed at the terminal, never echoed; Ctrl-C or Ctrl-D with nothing typed gives up. */
function readHidden(input: NodeJS.ReadStream, prompt: (text: string) => void, name: string): Promise<string> {
  prompt(`value for ${name} (not shown): `);
  input.setRawMode(true);
  input.resume();
  let value = "";
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.off("data", onData);
      prompt("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003" || (ch === "\u0004" && !value)) {
          return done(new AgentError("USAGE", "cancelled; nothing was written"));
        }
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
        if (Buffer.byteLength(value) > MAX_SECRET_BYTES) return done(tooLarge());
      }
    };
    input.on("data", onData);
  });
}

/**
 * A directory for the value's file that is memory, not disk, when the host has one: $XDG_RUNTIME_DIR (the
 * user's own tmpfs), else /dev/shm; the system temp directory only when neither exists (said on stderr).
 */
async function privateBase(prompt: (text: string) => void): Promise<string> {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime && path.isAbsolute(runtime)) {
    const st = await stat(runtime).catch(() => null);
    if (st?.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o077) === 0) return runtime;
  }
  if (existsSync("/dev/shm")) return "/dev/shm";
  prompt(`warning: no XDG_RUNTIME_DIR or /dev/shm: the value passes through ${tmpdir()} (removed after)\n`);
  return tmpdir();
}

/** Overwrites every regular file under dir with zeros (an editor's swap and backup files too), then removes it. */
async function shred(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const file = path.join(dir, name);
    const st = await lstat(file).catch(() => null);
    if (!st?.isFile()) continue;
    const handle = await open(file, "r+").catch(() => null);
    if (!handle) continue;
    try {
      await handle.write(Buffer.alloc(Math.min(st.size, MAX_SECRET_BYTES * 4)), 0, undefined, 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  await rm(dir, { recursive: true, force: true });
}

/**
 * `secret set NAME --editor`: the value written in $EDITOR (else vi), in a file of its own (0600) in a
 * directory of its own (0700) in memory (privateBase). The file is read once the editor exits 0, then
 * overwritten and removed with its directory, whatever happened. One trailing line break is dropped (editors
 * add one) unless `raw`.
 */
async function readFromEditor(raw: boolean, prompt: (text: string) => void): Promise<string> {
  const editor = process.env.EDITOR?.trim() || "vi";
  const dir = await mkdtemp(path.join(await privateBase(prompt), "deploy-agent-secret-"));
  try {
    const file = path.join(dir, "value");
    await (await open(file, "wx", 0o600)).close();
    // Through the shell, as git runs core.editor: EDITOR may carry arguments ("code --wait").
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn("sh", ["-c", `${editor} "$1"`, "editor", file], { stdio: "inherit" });
      child.on("error", reject);
      child.on("exit", (c, signal) => resolve(signal ? null : c));
    });
    if (code !== 0) {
      throw new AgentError(
        "USAGE",
        `the editor (${editor}) exited ${code ?? "on a signal"}; nothing was written`,
        {
          hint: "set EDITOR to an editor that waits until the file is closed, or pipe the value in",
        },
      );
    }
    const handle = await open(file, "r");
    try {
      const st = await handle.stat();
      if (st.size > MAX_SECRET_BYTES + 2) throw tooLarge();
      const buf = Buffer.alloc(st.size);
      await handle.read(buf, 0, st.size, 0);
      let text: string;
      try {
        text = valueText(buf);
      } finally {
        buf.fill(0);
      }
      if (!raw) text = text.replace(/\r?\n$/, "");
      if (Buffer.byteLength(text) > MAX_SECRET_BYTES) throw tooLarge();
      return text;
    } finally {
      await handle.close();
    }
  } finally {
    await shred(dir);
  }
}
