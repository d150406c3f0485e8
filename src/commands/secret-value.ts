import { AgentError } from "../errors.js";
import { MIN_LENGTH } from "../redact.js";
import { MAX_SECRET_BYTES } from "../secrets/catalog.js";

/**
 * A secret's value for `secret set`, held in memory only: from stdin when it is a pipe (one trailing line
 * break dropped unless `raw`), else typed at the terminal with echo off. At most MAX_SECRET_BYTES; empty or
 * shorter than the redaction point matches (it could not be kept out of logs) is refused.
 */
export async function readSecretValue(
  input: NodeJS.ReadStream,
  prompt: (text: string) => void,
  opts: { raw: boolean; name: string },
): Promise<string> {
  const value = input.isTTY ? await readHidden(input, prompt, opts.name) : await readPipe(input, opts.raw);
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
  let text = Buffer.concat(chunks).toString("utf8");
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
