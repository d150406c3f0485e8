import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";

/**
 * The listener's connection slots. When a connection arrives and more than `maxConnections` are open, the
 * oldest connections that hold no request (still sending their request line and headers, or idle between
 * keep-alive requests) and are older than EVICTION_GRACE_MS are closed to make room: a slow-loris eviction,
 * so that a client with a short request gets in while slow clients hold every slot. Requests in progress are
 * never evicted; a request with a body whose headers complete while `maxConnections` requests are in
 * progress has its connection closed at once, which keeps request bodies within maxConnections ×
 * bodyLimitBytes. Above maxConnections are only connections younger than the grace and requests without a
 * body; beyond CEILING × maxConnections the oldest connection without a request goes whatever its age, and a
 * new connection is closed at once only when every other one holds a request.
 */

/** Time a new connection has to send its request headers before it may be evicted. */
export const EVICTION_GRACE_MS = 500;
/** Open connections at most, as a multiple of maxConnections. */
export const CEILING = 4;

export interface ConnectionLimits {
  maxConnections: number;
  /** An idle keep-alive connection is closed after this (Node would add a fixed second of its own). */
  idleTimeoutMs: number;
}

export interface ConnectionEvents {
  /** A connection without a request closed to make room for a newer one. */
  evicted(): void;
  /** A new connection or request closed at once (the ceiling, or maxConnections requests with a body). */
  refused(): void;
}

interface Slot {
  /** Requests read and not yet answered (more than one when pipelined); -1 once the socket is closed. */
  requests: number;
  /** performance.now() at arrival. */
  since: number;
}

/** Takes over the connection limit of `server`; call before it listens. */
export function limitConnections(server: Server, limits: ConnectionLimits, events: ConnectionEvents): void {
  const max = limits.maxConnections;
  /** Insertion order is arrival order: the first entry is the oldest connection. */
  const open = new Map<Socket, Slot>();
  let inProgress = 0;

  const close = (socket: Socket) => {
    open.delete(socket);
    socket.destroy();
  };

  server.on("connection", (socket: Socket) => {
    const now = performance.now();
    const slot: Slot = { requests: 0, since: now };
    open.set(socket, slot);
    // Node never closes the responses queued behind a pipelined one when the socket goes: the slot is
    // released with the socket.
    socket.once("close", () => {
      open.delete(socket);
      if (slot.requests > 0) inProgress--;
      slot.requests = -1;
    });
    if (open.size > max) evictOldest(max, now - EVICTION_GRACE_MS, socket);
    // Newcomers within their grace fill the room up to the ceiling: the oldest of them goes, whatever its age.
    if (open.size > CEILING * max) evictOldest(CEILING * max, now, socket);
    if (open.size > CEILING * max) {
      close(socket);
      events.refused();
    }
  });

  /** Closes the oldest connections without a request that arrived before `before`, until `keep` are open. */
  function evictOldest(keep: number, before: number, newcomer: Socket) {
    for (const [socket, slot] of open) {
      if (open.size <= keep || slot.since > before || socket === newcomer) return;
      if (slot.requests > 0) continue;
      close(socket);
      events.evicted();
    }
  }

  // Before fastify's own listener, so that a refused request never reaches a route or reads a body.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const slot = open.get(socket);
    if (!slot) return;
    if (slot.requests === 0) {
      // A request without a body (a probe, a scrape) costs no more than its connection: always served.
      const body =
        req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"]) > 0;
      if (body && inProgress >= max) {
        close(socket);
        events.refused();
        return;
      }
      inProgress++;
    }
    slot.requests++;
    res.once("close", () => {
      if (slot.requests < 0 || --slot.requests > 0) return;
      inProgress--;
      // Node keeps an idle keep-alive connection for keepAliveTimeout and one second more; this is exact.
      socket.setTimeout(limits.idleTimeoutMs);
    });
  });
}
