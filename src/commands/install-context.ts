import { asAgentError } from "../core/errors.js";
import { silentLogger } from "../core/log.js";
import type { EffectRecorder } from "../host/effects.js";
import { createHttpSender } from "../host/http.js";
import { createContext } from "../steps/context.js";

/**
 * The one door install has to the host, acting or in a dry run recording what it would do, with its time
 * bounds; and what every stage that acts through it shares: systemctl, and saying why install failed. Apart
 * from the command so that its stages (plan, write, start units) take the door without importing the command.
 */

export type InstallContext = ReturnType<typeof createContext> & {
  send: ReturnType<typeof createHttpSender>;
  /**
   * The door for putting things back (undo, webhook.service restarted): a signal of its own, so what
   * aborted the install (its timeout, the operator's Ctrl-C, a closed SSH session) does not abort that too.
   */
  back: ReturnType<typeof createContext>;
};

/** How long install may act; then what is in progress is aborted and its changes taken back. */
const INSTALL_TIMEOUT_MS = 10 * 60_000;
/** Putting things back has at least this long after install's own time ran out (its bound starts with it). */
const BACK_MARGIN_MS = 5 * 60_000;

/** The door, its signal aborted by install's timeout or by `interrupted`. */
export function createInstallContext(o: {
  dryRun: boolean;
  root: string;
  systemctl: readonly string[];
  record: EffectRecorder;
  interrupted: AbortSignal;
}): InstallContext {
  const { dryRun, root, record } = o;
  const signal = AbortSignal.any([AbortSignal.timeout(INSTALL_TIMEOUT_MS), o.interrupted]);
  const commands = { systemctl: o.systemctl };
  const door = (signal: AbortSignal) =>
    createContext({ dryRun, root, log: silentLogger(), signal, commands, record });
  return {
    ...door(signal),
    send: createHttpSender({ dryRun, record, signal }),
    back: door(AbortSignal.timeout(INSTALL_TIMEOUT_MS + BACK_MARGIN_MS)),
  };
}

export const systemctl = (ctx: Pick<InstallContext, "run" | "commands">, ...args: string[]) =>
  ctx.run([...ctx.commands.systemctl, ...args]);

/** Why install failed: what was in progress, and first that install was interrupted, when it was. */
export function failure(ctx: Pick<InstallContext, "signal">, err: unknown): string {
  const message = asAgentError(err).message;
  if (!ctx.signal.aborted) return message;
  const why = asAgentError(ctx.signal.reason).message;
  return !message || message.includes(why) ? message || why : `${why}: ${message}`;
}
