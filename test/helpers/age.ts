import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { stringify } from "yaml";
import { PROJECT } from "./agent.js";

/** Real age keys and the real age CLI (Debian's `age` package) for the secret tests. */

export interface AgeKey {
  file: string;
  recipient: string;
  identity: string;
}

/** A key made by age-keygen itself (mode 0600, age-keygen's own format). */
export function ageKeygen(dir: string, name: string): AgeKey {
  const file = path.join(dir, `${name}.key`);
  const r = spawnSync("age-keygen", ["-o", file], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`age-keygen failed: ${r.stderr}`);
  const recipient = /age1[0-9a-z]+/.exec(r.stderr)?.[0] ?? "";
  const identity = readFileSync(file, "utf8")
    .split("\n")
    .find((l) => l.startsWith("AGE-SECRET-KEY-1"));
  return { file, recipient, identity: identity ?? "" };
}

/** `age -d -i key`: the plaintext, or null when age refuses. */
export function ageDecrypt(armored: string, key: AgeKey): string | null {
  const r = spawnSync("age", ["-d", "-i", key.file], { input: armored, encoding: "utf8" });
  return r.status === 0 ? r.stdout : null;
}

/** `age -a -r …`: the value encrypted by the CLI. */
export function ageEncrypt(value: string, recipients: string[]): string {
  const args = ["-a", ...recipients.flatMap((r) => ["-r", r])];
  const r = spawnSync("age", args, { input: value, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`age failed: ${r.stderr}`);
  return r.stdout;
}

/** A catalog's text: operators, hosts, secrets. */
export function catalogText(c: {
  operators: string[];
  hosts: Record<string, string>;
  secrets?: Record<string, unknown>;
}): string {
  return stringify({ version: 1, ...c, secrets: c.secrets ?? {} });
}

/** Installs a host key under root as install would leave it. */
export function placeHostKey(root: string, key: AgeKey): void {
  writeFileSync(path.join(root, "etc/deploy-agent/age.key"), readFileSync(key.file), { mode: 0o600 });
}

/** The real CLI (through tsx) with stdin fed from `input`. */
export function runCliWithInput(
  args: string[],
  input: string | Buffer,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--", path.join(PROJECT, "src/bin.ts"), ...args],
      {
        cwd: PROJECT,
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}
