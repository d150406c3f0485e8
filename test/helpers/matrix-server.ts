import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A Matrix client-server test homeserver for the room-state endpoints and for sending room events
 * (`PUT /rooms/{roomId}/send/{eventType}/{txnId}`, idempotent per token and txnId as the spec asks),
 * following the spec and Synapse: bearer auth (401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN), membership and power levels (403 M_FORBIDDEN),
 * 404 M_NOT_FOUND for absent state, whole-content replacement on PUT, 429 M_LIMIT_EXCEEDED with
 * retry_after_ms, and injectable 5xx answers and hangs. It counts every request and write.
 * `GET /account/whoami` answers the token's user (`{user_id, is_guest}`); the room's `m.room.power_levels`
 * and each user's `m.room.member` are state like any other (from `users`, `stateDefault` and `events`), and
 * a state PUT needs `events[type]`, else `state_default`, as the spec's authorization rules say.
 */

export interface TestUser {
  userId: string;
  powerLevel: number;
  joined?: boolean;
}

export interface MatrixServerOptions {
  roomId: string;
  /** access token → user */
  users: Record<string, TestUser>;
  /** power level needed to send state events (m.room.power_levels state_default) */
  stateDefault?: number;
  /** power level needed to send other events (m.room.power_levels events_default, default 0) */
  eventsDefault?: number;
  /** per event type power levels (m.room.power_levels events) */
  events?: Record<string, number>;
  /** no m.room.power_levels event in the room at all (the spec's defaults then apply) */
  noPowerLevels?: boolean;
  /**
   * Answer state content in the spec's canonical JSON (keys sorted), as homeservers that store events that way
   * (Conduit, Dendrite) do: JSON objects are unordered, so a client must not depend on the order it sent.
   */
  canonicalJson?: boolean;
}

export interface MatrixTestServer {
  url: string;
  /** `${type}/${stateKey}` → content */
  state: Map<string, Record<string, unknown>>;
  /** Room events sent (a repeated txnId is not sent twice). */
  messages: { roomId: string; type: string; txnId: string; content: Record<string, unknown> }[];
  /** Every request, with its raw body. */
  requests: { method: string; path: string; at: number; status: number; body: string }[];
  writes(): number;
  /** The most requests that were in progress at the same time. */
  maxInFlight(): number;
  /** The next n requests get 429 with this retry_after_ms. */
  rateLimit(n: number, retryAfterMs: number): void;
  /** The next n requests get this 5xx status. */
  failNext(n: number, status?: number): void;
  /** The next n requests never get an answer (until the server closes). */
  hangNext(n: number): void;
  /** The n requests after the next state write get this 5xx status (the write itself succeeds). */
  failAfterWrite(n: number, status?: number): void;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(body);
}

/** The spec's canonical JSON: object keys sorted, at every depth (the keys here are ASCII). */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (!value || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
  );
}

const err = (errcode: string, error: string) => ({ errcode, error });

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export async function startMatrixServer(opts: MatrixServerOptions): Promise<MatrixTestServer> {
  const state = new Map<string, Record<string, unknown>>();
  const messages: MatrixTestServer["messages"] = [];
  /** `${token} ${txnId}` → event id: a retried transaction gets the same answer and sends nothing. */
  const transactions = new Map<string, string>();
  const requests: MatrixTestServer["requests"] = [];
  let writes = 0;
  let limited = { n: 0, ms: 0 };
  let failing = { n: 0, status: 500 };
  let hanging = 0;
  let afterWrite = { n: 0, status: 500 };
  let inFlight = 0;
  let maxInFlight = 0;
  const hung: ServerResponse[] = [];

  /** The power levels and memberships the options describe, unless a test PUT its own. */
  const roomState = (type: string | undefined, stateKey: string): Record<string, unknown> | undefined => {
    const users = Object.values(opts.users);
    if (type === "m.room.power_levels" && stateKey === "" && !opts.noPowerLevels) {
      return {
        users: Object.fromEntries(users.map((u) => [u.userId, u.powerLevel])),
        users_default: 0,
        state_default: opts.stateDefault ?? 50,
        events_default: opts.eventsDefault ?? 0,
        events: opts.events ?? {},
      };
    }
    const member = type === "m.room.member" ? users.find((u) => u.userId === stateKey) : undefined;
    return member ? { membership: member.joined === false ? "leave" : "join" } : undefined;
  };

  const server = createServer(async (req, res) => {
    const entry = { method: req.method ?? "", path: req.url ?? "", at: Date.now(), status: 0, body: "" };
    requests.push(entry);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on("close", () => inFlight--);
    const reply = (status: number, body: unknown, headers?: Record<string, string>) => {
      entry.status = status;
      send(res, status, JSON.stringify(opts.canonicalJson ? canonical(body) : body), headers);
    };
    const body = await readBody(req);
    entry.body = body;
    if (hanging > 0) {
      hanging--;
      hung.push(res);
      return;
    }
    if (limited.n > 0) {
      limited.n--;
      const h = { "retry-after": String(Math.ceil(limited.ms / 1000)) };
      return reply(429, { ...err("M_LIMIT_EXCEEDED", "Too Many Requests"), retry_after_ms: limited.ms }, h);
    }
    if (failing.n > 0) {
      failing.n--;
      return reply(failing.status, err("M_UNKNOWN", "Internal server error"));
    }
    const auth = req.headers.authorization;
    if (!auth?.startsWith("Bearer ")) return reply(401, err("M_MISSING_TOKEN", "Missing access token"));
    const user = opts.users[auth.slice(7)];
    if (!user)
      return reply(401, { ...err("M_UNKNOWN_TOKEN", "Invalid access token passed."), soft_logout: false });

    if (req.url === "/_matrix/client/v3/account/whoami") {
      if (req.method !== "GET") return reply(405, err("M_UNRECOGNIZED", "Unrecognized request"));
      return reply(200, { user_id: user.userId, is_guest: false });
    }

    const sent = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/send\/([^/]+)\/([^/?]+)$/.exec(req.url ?? "");
    if (sent) {
      const [roomId = "", type = "", txnId = ""] = [sent[1], sent[2], sent[3]].map((s) =>
        decodeURIComponent(s ?? ""),
      );
      if (req.method !== "PUT") return reply(405, err("M_UNRECOGNIZED", "Unrecognized request"));
      if (roomId !== opts.roomId || user.joined === false) {
        return reply(403, err("M_FORBIDDEN", `User ${user.userId} not in room ${roomId}`));
      }
      if (user.powerLevel < (opts.eventsDefault ?? 0)) {
        return reply(403, err("M_FORBIDDEN", "You don't have permission to post that to the room."));
      }
      const done = transactions.get(`${auth.slice(7)} ${txnId}`);
      if (done) return reply(200, { event_id: done });
      let content: unknown;
      try {
        content = JSON.parse(body);
      } catch {
        return reply(400, err("M_NOT_JSON", "Content not JSON."));
      }
      if (!content || typeof content !== "object" || Array.isArray(content)) {
        return reply(400, err("M_BAD_JSON", "Body must be a JSON object"));
      }
      const eventId = `$${randomBytes(8).toString("hex")}`;
      transactions.set(`${auth.slice(7)} ${txnId}`, eventId);
      messages.push({ roomId, type, txnId, content: content as Record<string, unknown> });
      writes++;
      return reply(200, { event_id: eventId });
    }
    const m = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/state\/([^/]+)\/([^/?]*)$/.exec(req.url ?? "");
    if (!m) return reply(404, err("M_UNRECOGNIZED", "Unrecognized request"));
    const [roomId, type, stateKey] = [m[1], m[2], m[3]].map((s) => decodeURIComponent(s ?? ""));
    if (roomId !== opts.roomId || user.joined === false) {
      return reply(403, err("M_FORBIDDEN", `User ${user.userId} not in room ${roomId}`));
    }
    const key = `${type}/${stateKey}`;
    if (req.method === "GET") {
      const content = state.get(key) ?? roomState(type, stateKey ?? "");
      return content ? reply(200, content) : reply(404, err("M_NOT_FOUND", "Event not found."));
    }
    if (req.method === "PUT") {
      let content: unknown;
      try {
        content = JSON.parse(body);
      } catch {
        return reply(400, err("M_NOT_JSON", "Content not JSON."));
      }
      if (!content || typeof content !== "object" || Array.isArray(content)) {
        return reply(400, err("M_BAD_JSON", "Body must be a JSON object"));
      }
      const needed = opts.events?.[type ?? ""] ?? (opts.noPowerLevels ? 0 : (opts.stateDefault ?? 50));
      if (user.powerLevel < needed) {
        return reply(
          403,
          err(
            "M_FORBIDDEN",
            `You don't have permission to post that to the room. user_level (${user.powerLevel}) < send_level (${needed})`,
          ),
        );
      }
      state.set(key, content as Record<string, unknown>);
      writes++;
      if (afterWrite.n > 0) failing = afterWrite;
      afterWrite = { n: 0, status: 500 };
      return reply(200, { event_id: `$${randomBytes(8).toString("hex")}` });
    }
    return reply(405, err("M_UNRECOGNIZED", "Unrecognized request"));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    messages,
    requests,
    writes: () => writes,
    maxInFlight: () => maxInFlight,
    rateLimit: (n, ms) => {
      limited = { n, ms };
    },
    failNext: (n, status = 500) => {
      failing = { n, status };
    },
    hangNext: (n) => {
      hanging = n;
    },
    failAfterWrite: (n, status = 500) => {
      afterWrite = { n, status };
    },
    close: () =>
      new Promise((resolve) => {
        for (const r of hung) r.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
