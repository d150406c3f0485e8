import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import { loadStatusToken } from "../src/gitea/webhook-secret.js";

/**
 * The bearer token for /status and /metrics, read as every private file is: through one descriptor whose
 * status is what is checked (mode, owner, type, size), never a stat of the name and a read of it after.
 * Real files and modes; the file of another user needs root (CI runs as root).
 */

const NOBODY = 65534;
const TOKEN = "status-token-0123456789abcdef";

let dir: string;
beforeEach(() => {
  assert.equal(process.getuid?.(), 0, "a file of another user's needs root to make: run as root (CI does)");
  dir = mkdtempSync(path.join(tmpdir(), "status-token-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const refused = (pattern: RegExp) => (err: unknown) =>
  err instanceof AgentError && err.code === "CONFIG_INVALID" && pattern.test(err.message);

describe("the status token file", () => {
  it("a private file of the agent's is read, trimmed", async () => {
    const file = path.join(dir, "token");
    writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
    assert.equal((await loadStatusToken(file)).reveal(), TOKEN);
  });

  it("a FIFO with mode 0600 is refused at once, not waited on", async () => {
    const file = path.join(dir, "token");
    execFileSync("mkfifo", ["-m", "600", file]);
    const started = Date.now();
    // Bounded here too: the defect is a read that never returns.
    const outcome = await Promise.race([
      loadStatusToken(file).then(
        () => "read",
        (err: unknown) => err,
      ),
      new Promise((r) => setTimeout(() => r("still waiting"), 3000).unref()),
    ]);
    // A reader still blocked on it gets its end of file, so that the test process can end.
    if (outcome === "still waiting") closeSync(openSync(file, constants.O_WRONLY | constants.O_NONBLOCK));
    assert.ok(refused(/is not a regular file/)(outcome), String(outcome));
    assert.ok(Date.now() - started < 3000);
  });

  it("a 10 MiB file is refused before it is read", async () => {
    const file = path.join(dir, "token");
    writeFileSync(file, "a".repeat(10 * 1024 * 1024), { mode: 0o600 });
    await assert.rejects(loadStatusToken(file), refused(/is 10485760 bytes, more than 4096/));
  });

  it("a file others may read is refused", async () => {
    const file = path.join(dir, "token");
    writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
    chmodSync(file, 0o644);
    await assert.rejects(loadStatusToken(file), refused(/is readable by others \(mode 0644\)/));
  });

  it("a link to a 0600 file of another user's is refused: that user chooses the token", async () => {
    const theirs = path.join(dir, "theirs");
    writeFileSync(theirs, `${TOKEN}\n`, { mode: 0o600 });
    chownSync(theirs, NOBODY, NOBODY);
    const file = path.join(dir, "token");
    symlinkSync(theirs, file);
    await assert.rejects(loadStatusToken(file), refused(/is owned by uid 65534/));
  });

  it("a link to a 0600 file of the agent's is read through", async () => {
    const ours = path.join(dir, "ours");
    writeFileSync(ours, `${TOKEN}\n`, { mode: 0o600 });
    const file = path.join(dir, "token");
    symlinkSync(ours, file);
    assert.equal((await loadStatusToken(file)).reveal(), TOKEN);
  });

  it("a missing or short token is refused with how to make one", async () => {
    for (const content of [null, "short\n"]) {
      const file = path.join(dir, "token");
      rmSync(file, { force: true });
      if (content !== null) writeFileSync(file, content, { mode: 0o600 });
      await assert.rejects(loadStatusToken(file), (err: unknown) => {
        assert.ok(refused(/must hold a token of at least 16 characters/)(err), String(err));
        assert.match((err as AgentError).hint ?? "", /openssl rand -hex 32/);
        return true;
      });
    }
  });
});
