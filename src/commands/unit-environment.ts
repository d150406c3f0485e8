import { AgentError, asAgentError } from "../core/errors.js";
import type { CommandRunner } from "../host/command.js";

/**
 * A unit's environment from its `Environment=` lines as systemd itself resolved them (the unit file, then the
 * template's and the instance's drop-ins in systemd's order, masked ones left out; quoting, escapes and
 * specifiers): `systemctl show -p Environment --value UNIT`. EnvironmentFile= is not part of it. Values may
 * be secrets (a webhook secret in a drop-in): no message shows them, and a failure keeps systemctl's stderr only.
 */

export interface UnitEnvironmentHost {
  run: CommandRunner;
  commands: { systemctl: readonly string[] };
}

export async function unitEnvironment(
  ctx: UnitEnvironmentHost,
  unit: string,
): Promise<Record<string, string>> {
  const asked = `systemctl show -p Environment --value ${unit}`;
  let stdout: string;
  try {
    ({ stdout } = await ctx.run([...ctx.commands.systemctl, "show", "-p", "Environment", "--value", unit], {
      query: true,
      secretStdout: true,
    }));
  } catch (err) {
    throw new AgentError(
      "INSTALL_FAILED",
      `systemd did not say ${unit}'s environment: ${asAgentError(err).message}`,
      {
        hint: `install asks systemd where the unit listens: run it as root on the host, with systemd running (${asked})`,
      },
    );
  }
  try {
    return parseShownEnvironment(stdout);
  } catch (err) {
    throw new AgentError(
      "INSTALL_FAILED",
      `${asked} printed what install cannot read: ${(err as Error).message}`,
      {
        hint: `look at it yourself (${asked}; its values may be secrets): each item NAME=value, quoted by systemd where needed`,
      },
    );
  }
}

/** The C escapes systemd writes in a quoted item (cescape): their bytes. */
const C_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11 };

/**
 * systemctl's one line for a list of strings: items separated by one space, each as systemd's
 * shell_maybe_quote writes it: as it is, or in double quotes with `"` `\` `` ` `` `$` backslashed, and control
 * characters C-escaped (`\t`, `\xNN`). Errors say where, never what (the text may be a secret).
 */
export function parseShownEnvironment(text: string): Record<string, string> {
  const line = text.replace(/\n$/, "");
  const env: Record<string, string> = {};
  const fail = (what: string, at: number) => new Error(`${what} at character ${at + 1}`);
  let i = 0;
  while (i < line.length) {
    const start = i;
    const bytes: number[] = [];
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw fail("a quote not closed", start);
        const c = line[i] ?? "";
        if (c === '"') {
          i++;
          break;
        }
        if (c !== "\\") {
          const ch = String.fromCodePoint(line.codePointAt(i) ?? 0);
          bytes.push(...Buffer.from(ch));
          i += ch.length;
          continue;
        }
        const e = line[i + 1] ?? "";
        const hex = line.slice(i + 2, i + 4);
        if (e === "x" && /^[0-9a-fA-F]{2}$/.test(hex)) {
          bytes.push(Number.parseInt(hex, 16));
          i += 4;
        } else if (e in C_ESCAPES) {
          bytes.push(C_ESCAPES[e] ?? 0);
          i += 2;
        } else if (e && "\"\\`$'".includes(e)) {
          bytes.push(e.charCodeAt(0));
          i += 2;
        } else throw fail("an escape systemd does not write", i);
      }
    } else {
      const end = line.indexOf(" ", i);
      const word = line.slice(i, end < 0 ? line.length : end);
      if (/["\\]/.test(word)) throw fail("a quote or backslash outside quotes", i);
      bytes.push(...Buffer.from(word));
      i += word.length;
    }
    if (i < line.length && line[i] !== " ") throw fail("no space after an item", i);
    i++;
    const item = Buffer.from(bytes).toString("utf8");
    const eq = item.indexOf("=");
    if (eq <= 0) throw fail("an item that is not NAME=value", start);
    env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}
