import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";

/** A hash of every path, type, mode and content below a directory: equal hashes mean byte-identical trees. */
export function treeHash(dir: string, skip: (rel: string) => boolean = () => false): string {
  const h = createHash("sha256");
  const walk = (rel: string) => {
    const full = path.join(dir, rel);
    const st = lstatSync(full, { throwIfNoEntry: false });
    if (!st) {
      h.update(`missing ${rel}\n`);
      return;
    }
    h.update(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid}\n`);
    if (st.isSymbolicLink()) h.update(readlinkSync(full));
    else if (st.isFile()) h.update(readFileSync(full));
    else if (st.isDirectory()) {
      for (const name of readdirSync(full).sort()) {
        const child = rel ? `${rel}/${name}` : name;
        if (!skip(child)) walk(child);
      }
    }
  };
  walk("");
  return h.digest("hex");
}
