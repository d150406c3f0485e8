import { fstatSync, openSync } from "node:fs";
import { createRequire } from "node:module";
import { type DestinationStream, type Logger, type LoggerOptions, multistream, pino } from "pino";
import { redact } from "./redact.js";

/**
 * pino, JSON by default (journald keeps it), pretty when the stream is a TTY, optionally teed to a log
 * file. Header and token fields are redacted by path; Secret values print as [redacted] by themselves.
 */
export const REDACT_PATHS = [
  "req.headers.authorization",
  'req.headers["x-gitea-signature"]',
  'req.headers["x-gogs-signature"]',
  'req.headers["x-forgejo-signature"]',
  'req.headers["x-hub-signature"]',
  'req.headers["x-hub-signature-256"]',
  "secret",
  "token",
  "accessToken",
  "*.secret",
  "*.token",
  "*.accessToken",
];

export interface LogOptions {
  level: string;
  /** Where the main stream goes: 1 = stdout (the daemon), 2 = stderr (one-shot commands keep stdout for reports). */
  fd: 1 | 2;
  file?: string | undefined;
  /** Force JSON even on a TTY. */
  json?: boolean;
  /** Write here instead of the fd (tests capture log lines this way). */
  stream?: DestinationStream;
}

// Loaded only for a terminal: the daemon under journald never pays for it (about 10 MiB of RSS).
const requireLazily = createRequire(import.meta.url);
const pretty = (options: Record<string, unknown>): DestinationStream =>
  (requireLazily("pino-pretty") as (o: Record<string, unknown>) => DestinationStream)(options);

/** syslog priorities by pino level: journald reads a `<N>` prefix (SyslogLevelPrefix=, on by default). */
const PRIORITY: Record<string, string> = {
  "10": "<7>",
  "20": "<7>",
  "30": "<6>",
  "40": "<4>",
  "50": "<3>",
  "60": "<2>",
};

/**
 * Whether fd is connected to the journal: systemd sets JOURNAL_STREAM to its stream's device and inode
 * (systemd.exec(5)); a redirected stdout keeps the variable but not the same file.
 */
function toJournal(fd: 1 | 2): boolean {
  const [dev, ino] = (process.env.JOURNAL_STREAM ?? "").split(":");
  if (!dev || !ino) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(dev) && st.ino === BigInt(ino);
  } catch {
    return false;
  }
}

/**
 * Each line with its syslog priority in front, so `journalctl -p warning` filters the agent's lines; the
 * line after the prefix (which journald strips) is still one JSON object.
 */
function withPriority(dest: DestinationStream): DestinationStream {
  return {
    write(line: string) {
      const level = /^\{"level":(\d+)/.exec(line)?.[1] ?? "30";
      return dest.write(`${PRIORITY[level] ?? "<6>"}${line}`);
    },
  };
}

export function createLogger(opts: LogOptions): Logger {
  const tty = opts.fd === 1 ? process.stdout.isTTY : process.stderr.isTTY;
  const main: DestinationStream = opts.stream
    ? opts.stream
    : tty && !opts.json
      ? pretty({ destination: opts.fd, colorize: true, sync: true, ignore: "pid,hostname" })
      : toJournal(opts.fd)
        ? withPriority(pino.destination({ dest: opts.fd, sync: true }))
        : pino.destination({ dest: opts.fd, sync: true });
  const streams: { stream: DestinationStream; level?: string }[] = [{ stream: main, level: opts.level }];
  let fileProblem: string | undefined;
  if (opts.file) {
    try {
      streams.push({
        stream: pino.destination({ dest: openSync(opts.file, "a", 0o640), sync: true }),
        level: opts.level,
      });
    } catch (err) {
      fileProblem = `cannot open log file ${opts.file}: ${(err as NodeJS.ErrnoException).code}`;
    }
  }
  const options: LoggerOptions = {
    level: opts.level,
    base: undefined,
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    // Every line passes the one redaction point as it is written: secret values anywhere in it (an error
    // message quoting a homeserver's answer, a URL with credentials) never reach journald or the log file.
    hooks: { streamWrite: redact },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const logger = pino(options, multistream(streams));
  if (fileProblem) logger.warn(fileProblem);
  return logger;
}

/** A logger that drops everything: for library use and tests that assert on reports instead. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
