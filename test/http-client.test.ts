import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Secret } from "../src/core/secret.js";
import { httpRequest } from "../src/host/http-client.js";
import { createMatrixClient } from "../src/matrix/client.js";
import { PROJECT, unitNodeFlags } from "./helpers/agent.js";
import { startMatrixServer } from "./helpers/matrix-server.js";

/**
 * The daemon's own requests go through node:http (src/host/http-client.ts), not fetch(): undici stays
 * resident (10-12 MiB) once used. The client's bounds: the answer's size and the signal.
 */

let server: Server;
let base: string;
const BODY = "x".repeat(1000);

before(async () => {
  server = createServer((req, res) => {
    if (req.url === "/hang") return; // never answers
    let got = "";
    req.on("data", (c: Buffer) => {
      got += c.toString();
    });
    req.on("end", () => res.writeHead(200, { "x-got": String(got.length) }).end(BODY));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => server.close());

describe("httpRequest", () => {
  it("takes an answer of exactly maxBytes and refuses one byte more", async () => {
    const ok = await httpRequest(`${base}/`, { method: "PUT", body: "abc", maxBytes: BODY.length });
    assert.equal(ok.status, 200);
    assert.equal(ok.text, BODY);
    assert.equal(ok.header("X-Got"), "3");
    await assert.rejects(
      httpRequest(`${base}/`, { maxBytes: BODY.length - 1, onTooLarge: (m) => new Error(`over ${m}`) }),
      /^Error: over 999$/,
    );
  });

  it("rejects with the signal's reason when it aborts", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new DOMException("timed out after 100 ms", "TimeoutError")), 100);
    await assert.rejects(httpRequest(`${base}/hang`, { signal: ac.signal }), { name: "TimeoutError" });
  });

  it("names a refused connection by its code", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    await assert.rejects(httpRequest(`http://127.0.0.1:${port}/`, {}), { code: "ECONNREFUSED" });
  });
});

describe("the Matrix client", () => {
  it("never calls fetch()", async () => {
    const hs = await startMatrixServer({
      roomId: "!r:x",
      users: { tok: { userId: "@a:x", powerLevel: 100 } },
    });
    const real = globalThis.fetch;
    globalThis.fetch = () => Promise.reject(new Error("fetch() was called"));
    try {
      const client = createMatrixClient({ homeserver: hs.url, token: new Secret("tok"), maxAttempts: 1 });
      await client.putState("!r:x", "t.type", "k", { a: 1 });
      assert.deepEqual(await client.getState("!r:x", "t.type", "k"), { a: 1 });
    } finally {
      globalThis.fetch = real;
      await hs.close();
    }
  });
});

describe("under the unit's node flags, without WebAssembly", () => {
  it("the Matrix client, the health probe and the transform check still work", async () => {
    const hs = await startMatrixServer({
      roomId: "!r:x",
      users: { tok: { userId: "@a:x", powerLevel: 100 } },
    });
    const dir = mkdtempSync(path.join(tmpdir(), "unit-flags-"));
    try {
      const script = path.join(dir, "daemon-parts.mts");
      const src = (p: string) => JSON.stringify(path.join(PROJECT, p));
      writeFileSync(
        script,
        `import { Secret } from ${src("src/core/secret.ts")};
import { createMatrixClient } from ${src("src/matrix/client.ts")};
import { waitHealthy } from ${src("src/host/health.ts")};
import { checkTransforms } from ${src("src/hookshot/checks.ts")};
const client = createMatrixClient({ homeserver: ${JSON.stringify(hs.url)}, token: new Secret("tok"), maxAttempts: 1 });
await client.putState("!r:x", "t.type", "k", { a: 1 });
const health = await waitHealthy(${JSON.stringify(`${base}/`)}, { timeoutMs: 5000 });
const [verdict] = await checkTransforms([{ src: "result = {", payloads: [] }]);
console.log(JSON.stringify({ wasm: typeof WebAssembly, state: await client.getState("!r:x", "t.type", "k"), health, problem: verdict?.problem }));
`,
      );
      // The daemon needs no WebAssembly (undici does; V8's lite mode turns it off): the unit's flags plus none.
      const flags = [...unitNodeFlags(), "--no-expose-wasm"];
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        [...flags, "--import", "tsx", script],
        {
          cwd: PROJECT,
        },
      );
      assert.equal(stderr, "");
      const out = JSON.parse(stdout);
      assert.equal(out.wasm, "undefined");
      assert.deepEqual(out.state, { a: 1 });
      assert.deepEqual(out.health, { healthy: true, last: "HTTP 200" });
      assert.match(out.problem, /does not compile in hookshot's QuickJS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await hs.close();
    }
  });
});
