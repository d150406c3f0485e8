import { readFile } from "node:fs/promises";
import { z } from "zod";
import { fetchFailure } from "../core/fetch-failure.js";
import { withTimeout } from "../core/with-timeout.js";
import { httpRequest } from "../host/http-client.js";
import { hostPath } from "../steps/common.js";
import type { HostJob, JobContext, JobResult } from "./types.js";

/**
 * Call-aware LiveKit restart. A deploy only flags the restart (killing livekit-server drops every call);
 * this restarts it when no call is active and clears the flag. "No call" needs both signals to say zero:
 * LiveKit's own gauges (livekit_participant_total, livekit_room_total — they count UDP participants too)
 * and established TCP connections to the RTC TCP port from /proc/net/tcp and /proc/net/tcp6. When the
 * metrics endpoint cannot be read, TCP alone decides, with a warning.
 */

export const livekitSchema = z.strictObject({
  unit: z.string().min(1).default("livekit-server.service"),
  flagFile: hostPath.default("/run/livekit-restart-pending"),
  metricsUrl: z.url().default("http://127.0.0.1:6789/metrics"),
  rtcTcpPort: z.number().int().min(1).max(65535).default(7881),
  /** `serve` checks this often while a restart is pending; 0 leaves it to the timer. */
  watchIntervalSeconds: z.number().int().min(0).max(3600).default(15),
});

export type LivekitConfig = z.infer<typeof livekitSchema>;

export interface Decision {
  pending: boolean;
  restart: boolean;
  reason: string;
  participants: number | null;
  rooms: number | null;
  tcpConnections: number;
  warnings: string[];
}

const ESTABLISHED = "01";

/** Established TCP connections whose local port is `port`, from /proc/net/tcp and tcp6. */
export async function establishedTcp(
  port: number,
  files = ["/proc/net/tcp", "/proc/net/tcp6"],
): Promise<number> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let count = 0;
  for (const file of files) {
    const text = await readFile(file, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      const local = cols[1];
      if (local && cols[3] === ESTABLISHED && local.slice(local.lastIndexOf(":") + 1) === hexPort) count++;
    }
  }
  return count;
}

/** A sample's value as the text format writes it: a float, `+Inf`, `-Inf` or `NaN` (anything else: NaN). */
const sampleValue = (text: string) =>
  text === "+Inf" ? Number.POSITIVE_INFINITY : text === "-Inf" ? Number.NEGATIVE_INFINITY : Number(text);

/**
 * Sums every sample of the named metrics in Prometheus text exposition format (null: no sample). A negative
 * sample (a gauge decremented once too often) counts as 0: it is no count of anything, and summed it would
 * cancel another node's participants and let a restart drop their call. A NaN sample (or one that is no
 * number) makes the sum NaN: a node whose count is unknown must not read as a node without calls.
 */
export function sumSamples(text: string, names: readonly string[]): Record<string, number | null> {
  const sums: Record<string, number | null> = Object.fromEntries(names.map((n) => [n, null]));
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m?.[1] || !(m[1] in sums)) continue;
    sums[m[1]] = (sums[m[1]] ?? 0) + Math.max(0, sampleValue(m[3] ?? ""));
  }
  return sums;
}

/** LiveKit's /metrics answer (a few KiB) is refused past this; the decision then rests on TCP alone. */
export const LIVEKIT_METRICS_MAX_BYTES = 1024 * 1024;

async function scrape(
  url: string,
  signal: AbortSignal,
): Promise<{ participants: number | null; rooms: number | null; problem?: string }> {
  try {
    const res = await withTimeout(3000, signal, (s) =>
      httpRequest(url, {
        signal: s,
        maxBytes: LIVEKIT_METRICS_MAX_BYTES,
        onTooLarge: (max) => new Error(`the answer is larger than ${max} bytes`),
      }),
    );
    if (!res.ok) return { participants: null, rooms: null, problem: `HTTP ${res.status}` };
    const sums = sumSamples(res.text, ["livekit_participant_total", "livekit_room_total"]);
    const participants = sums.livekit_participant_total ?? null;
    if (participants === null)
      return { participants, rooms: null, problem: "no livekit_participant_total in the metrics" };
    if (Number.isNaN(participants))
      return {
        participants: null,
        rooms: null,
        problem: "livekit_participant_total has a sample that is not a number",
      };
    const rooms = sums.livekit_room_total ?? 0;
    // +Inf (or past float64) is a count above any: kept a number, as JSON has no Infinity (it would print null,
    // which reads as metrics unread).
    const finite = (n: number) => Math.min(n, Number.MAX_SAFE_INTEGER);
    return { participants: finite(participants), rooms: Number.isNaN(rooms) ? null : finite(rooms) };
  } catch (err) {
    return { participants: null, rooms: null, problem: fetchFailure(err) };
  }
}

/** Looks, decides, and restarts and clears the flag when no call is active (a dry context only records). */
export async function livekitRestart(config: LivekitConfig, ctx: JobContext): Promise<Decision & JobResult> {
  const flag = await ctx.host.snapshot(config.flagFile);
  const pending = flag.data !== null;
  const tcpConnections = await establishedTcp(config.rtcTcpPort);
  if (!pending) {
    return {
      pending,
      restart: false,
      reason: "no restart pending",
      message: "no restart pending",
      gauge: 0,
      participants: null,
      rooms: null,
      tcpConnections,
      warnings: [],
    };
  }
  const warnings: string[] = [];
  const metrics = await scrape(config.metricsUrl, ctx.signal);
  if (metrics.problem)
    warnings.push(
      `LiveKit metrics unreadable at ${config.metricsUrl} (${metrics.problem}); deciding on TCP connections alone`,
    );
  const { participants, rooms } = metrics;
  const busy = (participants ?? 0) > 0 || tcpConnections > 0;
  const seen = `${participants ?? "?"} participant(s) in ${rooms ?? "?"} room(s), ${tcpConnections} TCP connection(s) on ${config.rtcTcpPort}`;
  const since = Math.floor((flag.mtimeMs ?? 0) / 1000);
  const decision = { pending, participants, rooms, tcpConnections, warnings };
  for (const w of warnings) ctx.log.warn(w);
  if (busy) {
    const reason = `call active: ${seen}; restart stays pending`;
    return { ...decision, restart: false, reason, message: reason, gauge: since };
  }
  const restarted = await ctx.run([...ctx.commands.systemctl, "restart", config.unit]);
  await ctx.host.remove(config.flagFile);
  const reason = `no call active (${seen}): ${restarted.ran ? "restarted" : "would restart"} ${config.unit}`;
  return {
    ...decision,
    restart: true,
    acted: true,
    reason,
    message: reason,
    gauge: restarted.ran ? 0 : since,
  };
}

export const livekitRestartJob: HostJob<typeof livekitSchema> = {
  command: "livekit-restart",
  section: "livekit",
  schema: livekitSchema,
  summary: "restart livekit-server if a restart is pending and no call is active",
  timeoutSeconds: 120,
  check(config, steps) {
    const deferred = steps.filter((s) => s.kind === "systemd-unit" && s.restart === "deferred");
    return deferred.length &&
      !deferred.some((s) => s.kind === "systemd-unit" && s.flagFile === config.flagFile)
      ? [{ path: ["livekit", "flagFile"], message: "must be the flagFile of the deferred systemd-unit step" }]
      : [];
  },
  watchSeconds: (config) => config.watchIntervalSeconds,
  gauge: {
    name: "deploy_agent_livekit_restart_pending_since_timestamp_seconds",
    help: "When the pending LiveKit restart was flagged; 0 when none is pending",
  },
  install: {
    units: ["livekit-graceful-restart.service", "livekit-graceful-restart.timer"],
    enable: ["livekit-graceful-restart.timer"],
  },
  run: livekitRestart,
};
