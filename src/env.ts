import { readFile } from "node:fs/promises";
import { parse } from "dotenv";
import { AgentError } from "./errors.js";
import { registerSecret, SECRET_NAME } from "./redact.js";

/** Reads a dotenv file; a named file that cannot be read is an error, not an empty environment. */
export async function readEnvFile(file: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new AgentError(
      "ENV_MISSING",
      `cannot read env file ${file}: ${(err as NodeJS.ErrnoException).code}`,
      {
        hint: "create it (mode 0600) or pass --env-file FILE",
        cause: err,
      },
    );
  }
  const values = parse(text);
  for (const [name, value] of Object.entries(values)) if (SECRET_NAME.test(name)) registerSecret(value);
  return values;
}

/** The variables `${VAR}` may reference: the env file's, overridden by the process environment. */
export function mergeEnv(
  fromFile: Record<string, string>,
  processEnv: NodeJS.ProcessEnv,
): Record<string, string> {
  const merged: Record<string, string> = { ...fromFile };
  for (const [k, v] of Object.entries(processEnv)) if (v !== undefined) merged[k] = v;
  return merged;
}
