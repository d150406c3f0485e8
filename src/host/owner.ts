import { readFile } from "node:fs/promises";
import { AgentError } from "../core/errors.js";

/** Resolves `user[:group]` (names or numbers) to ids through /etc/passwd and /etc/group. */
export interface Ids {
  uid: number;
  gid: number | undefined;
}

async function lookup(file: string, name: string): Promise<{ id: number; gid: number } | null> {
  const text = await readFile(file, "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields[0] === name && fields[2] !== undefined) {
      return { id: Number(fields[2]), gid: Number(fields[3]) };
    }
  }
  return null;
}

export async function resolveOwner(spec: string): Promise<Ids> {
  const [user = "", group] = spec.split(":");
  let uid: number;
  let gid: number | undefined;
  if (/^\d+$/.test(user)) {
    uid = Number(user);
  } else {
    const entry = await lookup("/etc/passwd", user);
    if (!entry) throw new AgentError("TARGET_WRITE_FAILED", `owner: no user "${user}" in /etc/passwd`);
    uid = entry.id;
    gid = entry.gid;
  }
  if (group !== undefined) {
    if (/^\d+$/.test(group)) {
      gid = Number(group);
    } else {
      const entry = await lookup("/etc/group", group);
      if (!entry) throw new AgentError("TARGET_WRITE_FAILED", `owner: no group "${group}" in /etc/group`);
      gid = entry.id;
    }
  }
  return { uid, gid };
}
