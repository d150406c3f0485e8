import { cp, stat } from "node:fs/promises";
import path from "node:path";
import type { Manifest } from "../manifest/schema.js";
import type { Snapshot } from "../source/snapshot.js";
import { type HostTools, type PlanCheck, runTool, scratch, tail, writeInside } from "./plan-tool-run.js";

/** `systemd-analyze verify` of a unit step's file, installed in a scratch root with the distribution's units. */
export async function verifyUnit(
  step: Extract<Manifest["steps"][number], { kind: "systemd-unit" }>,
  head: Snapshot,
  tools: HostTools,
): Promise<PlanCheck> {
  const name = `${step.name}: systemd-analyze verify`;
  const file = step.source;
  if (!tools.systemdAnalyze)
    return {
      name,
      file,
      result: "skipped",
      message: "systemd-analyze is not on this machine: the unit was not verified",
    };
  const data = await head.read(file).catch(() => null);
  if (!data)
    return { name, file, result: "skipped", message: "the unit file is missing (see the source check)" };
  const unit = step.unit ?? path.posix.basename(file);
  return scratch(async (root) => {
    // The distribution's units for dependencies (their links kept as links: fs.cp would make a relative
    // one absolute, into the host's directory), the unit where the step installs it, and a stand-in for
    // every program it starts: what is checked is the unit file, not this machine's programs.
    try {
      if (await stat(tools.unitsDir).catch(() => null))
        await cp(tools.unitsDir, path.join(root, "lib/systemd/system"), {
          recursive: true,
          verbatimSymlinks: true,
        });
      await writeInside(root, path.join(root, step.directory, unit), data, 0o644);
      for (const m of data.toString("utf8").matchAll(/^Exec\w+=[-@:+!]*(\/\S+)/gm)) {
        const exe = path.join(root, m[1] ?? "");
        if (exe.startsWith(root + path.sep)) await writeInside(root, exe, "#!/bin/sh\n", 0o755);
      }
    } catch (err) {
      const why = (err as Error).message.split(root).join("");
      return { name, file, result: "failed", message: `the unit could not be put in a scratch root: ${why}` };
    }
    const instance = unit.includes("@.") ? unit.replace("@.", "@plan.") : unit;
    const run = await runTool(
      tools.systemdAnalyze ?? "",
      ["verify", `--root=${root}`, instance],
      tools.timeoutMs,
    );
    if (run.timedOut)
      return {
        name,
        file,
        result: "failed",
        message: `systemd-analyze did not finish within ${tools.timeoutMs} ms`,
      };
    const output = run.output.split(root).join("");
    if (run.code !== 0 || output)
      return { name, file, result: "failed", message: tail(output || `exited with code ${run.code}`) };
    return { name, file, result: "passed", message: "systemd-analyze verify: no errors or warnings" };
  });
}
