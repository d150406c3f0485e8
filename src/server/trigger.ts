import type { Trigger } from "../state/history.js";

/**
 * The deploy queue's reasons as the history's trigger. The queue keeps the newest reasons first; a run
 * that stands for several requests is recorded as its newest push if it has one (what an operator looks
 * for), else as its newest request.
 */
export function triggerOf(reasons: readonly string[]): Trigger {
  const push = reasons.map((r) => /^push \S+ \(delivery (.+)\)$/.exec(r)).find(Boolean);
  if (push) return { kind: "push", delivery: push[1] ?? "" };
  const reason = reasons[0] ?? "";
  if (reason === "poll") return { kind: "poll" };
  if (reason.startsWith("self-heal "))
    return { kind: "self-heal", steps: reason.slice("self-heal ".length).split(", ") };
  if (reason.startsWith("retry after ")) return { kind: "retry", after: reason.slice("retry after ".length) };
  return { kind: "start-up" };
}
