import { AgentError, asAgentError } from "../core/errors.js";
import type { StepMatrix } from "../steps/types.js";

/**
 * A Matrix token checked before it replaces the one in use: the homeserver must know it (`whoami`), its user
 * must be joined to the room, and the room's power levels must let that user send the state event the token
 * is for (hookshot's connections). Levels as the spec reads m.room.power_levels: the user's is `users[id]`,
 * else `users_default` (0); the event's is `events[type]`, else `state_default` (50; 0 when the room has no
 * power levels event at all). A failed check is TOKEN_REJECTED naming what failed; a homeserver that could
 * not be asked stays a transient error (retried), and in both cases nothing has been written.
 */
export async function checkMatrixToken(
  matrix: StepMatrix,
  room: string,
  eventType: string,
  what: string,
): Promise<string> {
  const rejected = (why: string, hint: string, cause?: unknown) =>
    new AgentError("TOKEN_REJECTED", `${what}: ${why}; the old token stays in place`, { hint, cause });
  // A dry run's context reports "could not look" as UNDETERMINED with the answer as its cause: a 401 or
  // 403 there is still an answer about the token.
  const answer = (err: unknown) => {
    const e = asAgentError(err);
    return e.code === "UNDETERMINED" && e.cause ? asAgentError(e.cause) : e;
  };
  const stalled = (err: unknown) => answer(err).failure === "stalled";

  let user: string;
  try {
    user = await matrix.whoami();
  } catch (err) {
    if (!stalled(err)) throw err;
    throw rejected(
      `whoami failed (${answer(err).message})`,
      "make a new token for the right user, set it again with deploy-agent secret set, commit and push",
      err,
    );
  }
  let member: Record<string, unknown> | null;
  let levels: Record<string, unknown> | null;
  try {
    member = await matrix.getState(room, "m.room.member", user);
    levels = await matrix.getState(room, "m.room.power_levels", "");
  } catch (err) {
    if (!stalled(err)) throw err;
    throw rejected(
      `${user} cannot read the state of ${room} (${answer(err).message})`,
      `invite ${user} to ${room}`,
      err,
    );
  }
  if (member?.membership !== "join") {
    throw rejected(
      `${user} is not joined to ${room} (membership ${String(member?.membership ?? "none")})`,
      `join ${user} to ${room}`,
    );
  }
  const num = (v: unknown, fallback: number) => (typeof v === "number" && Number.isInteger(v) ? v : fallback);
  const rec = (v: unknown) => (v && typeof v === "object" ? (v as Record<string, unknown>) : {});
  const has = levels !== null;
  const level = num(rec(levels?.users)[user], num(levels?.users_default, 0));
  const needed = num(rec(levels?.events)[eventType], num(levels?.state_default, has ? 50 : 0));
  if (level < needed) {
    throw rejected(
      `${user} has power level ${level} in ${room}, and ${eventType} needs ${needed}`,
      `raise ${user}'s power level in ${room} to ${needed}, or use a token of a user who has it`,
    );
  }
  return user;
}
