import { AgentError, asAgentError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { checkMatrixToken } from "../secrets/matrix-check.js";
import { openSecret } from "../secrets/open.js";
import { fetchBranch, resolveTarget } from "../source/git.js";
import { closeRepo, openRepo } from "../source/open-repo.js";
import { loadSnapshot } from "../source/snapshot.js";
import { createStepContext } from "../steps/context.js";
import type { SecretStep } from "../steps/secret.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

/**
 * `deploy-agent secret check` on a host: every `secret` step with a `matrix` check (or the ones named), its
 * secret at the tip of the branch decrypted in memory and asked of the homeserver as the step would before
 * using it (whoami, membership, power level). Reads only. Exit 0 all pass, 1 one failed.
 */
export async function secretCheckCommand(
  flags: CommonFlags & { step: string[]; fetch: boolean },
  out: (t: string) => void,
): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const steps = manifest.steps.filter(
    (s): s is SecretStep => s.kind === "secret" && (flags.step.length ? flags.step.includes(s.name) : true),
  );
  const unknown = flags.step.filter((n) => !steps.some((s) => s.name === n));
  if (unknown.length) {
    throw new AgentError("USAGE", `no secret step named ${unknown.join(", ")} in ${r.loaded.file}`);
  }
  const checked = steps.filter((s) => s.matrix);
  if (!checked.length) {
    out("no secret step with a matrix check\n");
    return 0;
  }
  const repo = await openRepo(r.repoDir, manifest.repo.remote, manifest.repo.branch);
  const log = commandLogger(flags, r, { logFile: false });
  let failed = 0;
  try {
    if (flags.fetch) await fetchBranch(repo);
    const revision = await resolveTarget(repo);
    const source = loadSnapshot(repo, revision);
    for (const step of checked) {
      const m = step.matrix;
      if (!m) continue;
      const ctx = createStepContext({
        dryRun: true,
        root: r.root,
        source,
        log: log.child({ step: step.name }),
        signal: AbortSignal.timeout(step.timeoutSeconds * 1000),
        commands: manifest.commands,
        record: () => {},
      });
      try {
        const value = await openSecret(ctx, step.secret, step.identityFile);
        const matrix = ctx.matrix({
          homeserver: m.homeserver,
          token: new Secret(value),
          attempts: 1,
          backoffMs: 500,
          timeoutMs: m.timeoutMs,
        });
        const user = await checkMatrixToken(
          matrix,
          m.room,
          m.eventType,
          `${step.secret} at ${revision.slice(0, 12)}`,
        );
        out(`ok ${step.name}: ${step.secret} is ${user}, who may send ${m.eventType} in ${m.room}\n`);
      } catch (err) {
        failed++;
        const e = asAgentError(err);
        out(`FAILED ${step.name}: ${e.code}: ${e.message}\n  hint: ${e.hint}\n`);
      }
    }
  } finally {
    closeRepo(repo);
  }
  return failed ? 1 : 0;
}
