import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parse } from "dotenv";
import { parseDocument } from "yaml";
import { valueText } from "../src/commands/secret-value.js";
import { AgentError } from "../src/core/errors.js";
import { redact, registerSecret } from "../src/core/redact.js";
import { envLine, envValueProblem, hideEnvValues, readEnvFile } from "../src/host/env.js";
import { decrypt, encrypt } from "../src/secrets/age.js";
import { fingerprint, MAX_SECRET_BYTES, parseCatalog } from "../src/secrets/catalog.js";
import { hostRecipient, plannedHostIdentity } from "../src/secrets/identity.js";
import { liveValue, place, shown } from "../src/secrets/place.js";
import {
  type AgeKey,
  ageDecrypt,
  ageEncrypt,
  ageKeygen,
  catalogText,
  runCliWithInput,
} from "./helpers/age.js";
import { hostRoot, PROJECT, runCli, writeManifest } from "./helpers/agent.js";
import { git } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";

const skip = needs("age", ["--version"], "apt-get install -y age");

describe("age: the library and the age CLI read each other's files", { skip }, () => {
  let dir: string;
  let host: AgeKey;
  let other: AgeKey;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "age-interop-"));
    host = ageKeygen(dir, "host");
    other = ageKeygen(dir, "other");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("decrypts what age -a -r made, and age -d reads what the library made", async () => {
    const value = "syt_interop_#$ 'quoted' \"both\" ünïcode\nsecond line";
    assert.equal(await decrypt(ageEncrypt(value, [host.recipient]), host.identity, "x"), value);
    const armored = await encrypt(value, [host.recipient, other.recipient]);
    assert.match(armored, /^-----BEGIN AGE ENCRYPTED FILE-----\n/);
    assert.equal(ageDecrypt(armored, host), value);
    assert.equal(ageDecrypt(armored, other), value);
  });

  it("a value's bytes end to end: a leading byte order mark kept, one fingerprint; bytes not UTF-8 refused", async () => {
    const bom = "\uFEFFbom-token-value";
    const given = valueText(Buffer.from(bom));
    assert.equal(given, bom, "secret set keeps it");
    assert.equal(
      await decrypt(await encrypt(given, [host.recipient]), host.identity, "x"),
      bom,
      "the host too",
    );
    assert.equal(ageDecrypt(await encrypt(given, [host.recipient]), host), bom, "and age -d");
    assert.throws(
      () => valueText(Buffer.from([0x74, 0x6f, 0x6b, 0xff, 0xfe, 0x80])),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, "USAGE");
        assert.match(e.message, /not UTF-8 text/);
        return true;
      },
    );
  });

  it("a file for another key is SECRET_UNREADABLE, never a wrong value", async () => {
    const armored = ageEncrypt("for-other-only", [other.recipient]);
    await assert.rejects(decrypt(armored, host.identity, "secrets/x.age"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "SECRET_UNREADABLE");
      assert.match(e.message, /secrets\/x\.age cannot be decrypted/);
      return true;
    });
    // a damaged file: one ciphertext character changed
    const good = await encrypt("damaged-value", [host.recipient]);
    const lines = good.split("\n");
    const i = lines.length - 3;
    lines[i] = `${lines[i]?.[0] === "A" ? "B" : "A"}${lines[i]?.slice(1)}`;
    await assert.rejects(decrypt(lines.join("\n"), host.identity, "y"), { code: "SECRET_UNREADABLE" });
  });
});

describe("install's host identity", { skip }, () => {
  it("is made once in age-keygen's format (age -d reads it), never replaced, its recipient readable without crypto", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "age-identity-"));
    try {
      const file = path.join(dir, "age.key");
      const made = await plannedHostIdentity(file);
      assert.ok(made.data && made.recipient);
      writeFileSync(file, made.data, { mode: 0o600 });
      const y = spawnSync("age-keygen", ["-y", file], { encoding: "utf8" });
      assert.equal(y.stdout.trim(), made.recipient, "age-keygen derives the same recipient");
      assert.equal(
        ageDecrypt(await encrypt("to-the-host", [made.recipient]), { file, recipient: "", identity: "" }),
        "to-the-host",
      );
      assert.equal(await hostRecipient(file), made.recipient);
      const again = await plannedHostIdentity(file);
      assert.deepEqual(again, { recipient: made.recipient, data: undefined }, "an existing key is kept");
      assert.equal(await hostRecipient(path.join(dir, "none")), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("something at the key's name that cannot be read as a key file is refused, never planned over", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "age-identity-"));
    try {
      const refused = (file: string) =>
        Promise.race([
          plannedHostIdentity(file).then(
            (planned) => `planned a new identity: ${JSON.stringify({ ...planned, data: !!planned.data })}`,
            (err: AgentError) => err,
          ),
          new Promise<string>((done) => setTimeout(() => done("still reading after 3 s"), 3000).unref()),
        ]);
      const asDir = path.join(dir, "age.key");
      mkdirSync(asDir);
      const d = await refused(asDir);
      assert.ok(d instanceof AgentError, String(d));
      assert.equal(d.code, "SECRET_UNREADABLE");
      assert.match(d.message, /age\.key is not a regular file: it cannot be read as a key file/);
      const fifo = path.join(dir, "fifo.key");
      spawnSync("mkfifo", ["-m", "600", fifo]);
      const f = await refused(fifo);
      // A reader left waiting on the old code is let go (opened for reading and writing: never blocks).
      spawnSync("sh", ["-c", 'exec 3<>"$0"', fifo]);
      assert.ok(f instanceof AgentError, String(f));
      assert.equal(f.code, "SECRET_UNREADABLE");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("secret set, list and rekey through the real CLI", { skip }, () => {
  let dir: string;
  let repo: string;
  let operator: AgeKey;
  let h151: AgeKey;
  let h110: AgeKey;
  const VALUE = "syt_bWF0cml4_SET_recognisable_Value_42";
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "secret-cli-"));
    operator = ageKeygen(dir, "operator");
    h151 = ageKeygen(dir, "lxc151");
    h110 = ageKeygen(dir, "lxc110");
    repo = path.join(dir, "repo");
    mkdirSync(path.join(repo, "secrets"), { recursive: true });
    writeFileSync(
      path.join(repo, "secrets/secrets.yaml"),
      `# who may read which secret\n${catalogText({ operators: [operator.recipient], hosts: { lxc151: h151.recipient, lxc110: h110.recipient } })}`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("set encrypts stdin to its hosts and the operators, never printing the value", async () => {
    const r = await runCliWithInput(
      ["secret", "set", "matrix-token", "--hosts", "lxc151", "--repo", repo],
      `${VALUE}\n`,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.includes(VALUE), false);
    assert.match(r.stdout, new RegExp(fingerprint(VALUE)));
    const armored = readFileSync(path.join(repo, "secrets/matrix-token.age"), "utf8");
    assert.equal(armored.includes(VALUE), false);
    assert.equal(ageDecrypt(armored, h151), VALUE, "the host reads it (trailing newline dropped)");
    assert.equal(ageDecrypt(armored, operator), VALUE, "the operator's recovery key reads it");
    assert.equal(ageDecrypt(armored, h110), null, "another host cannot");
    const catalog = readFileSync(path.join(repo, "secrets/secrets.yaml"), "utf8");
    assert.match(catalog, /^# who may read which secret/, "comments kept");
    const entry = parseCatalog(catalog).secrets["matrix-token"];
    assert.deepEqual(entry?.hosts, ["lxc151"]);
    assert.deepEqual(entry?.recipients, [h151.recipient, operator.recipient].sort());
  });

  it("refuses an unknown host, a new secret without --hosts, an empty value and a bad name", async () => {
    const cases: [string[], string, RegExp][] = [
      [["--hosts", "lxc999"], "value-123456", /lxc999 is not in hosts/],
      [[], "value-123456", /is new: say which hosts/],
      [["--hosts", "lxc151"], "\n", /no value given/],
      [["--hosts", "lxc151"], "short", /shorter than 6/],
    ];
    for (const [extra, input, message] of cases) {
      const r = await runCliWithInput(["secret", "set", "fresh", "--repo", repo, ...extra], input);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    }
    const bad = await runCliWithInput(
      ["secret", "set", "../escape", "--hosts", "lxc151", "--repo", repo],
      "value-123456",
    );
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /lowercase letters/);
    assert.equal(
      spawnSync("ls", [path.join(repo, "secrets")], { encoding: "utf8" }).stdout.includes("fresh"),
      false,
    );
  });

  it(`takes a value of exactly ${MAX_SECRET_BYTES} bytes and refuses one more`, async () => {
    const at = "x".repeat(MAX_SECRET_BYTES);
    const ok = await runCliWithInput(
      ["secret", "set", "big", "--hosts", "lxc110", "--raw", "--repo", repo],
      at,
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ageDecrypt(readFileSync(path.join(repo, "secrets/big.age"), "utf8"), h110), at);
    const over = await runCliWithInput(["secret", "set", "big", "--raw", "--repo", repo], `${at}y`);
    assert.equal(over.code, 2);
    assert.match(over.stderr, /larger than 65536 bytes/);
    assert.equal(ageDecrypt(readFileSync(path.join(repo, "secrets/big.age"), "utf8"), h110), at, "old kept");
  });

  it("list shows names, hosts and age, never values; a host added makes it ask for rekey, rekey fixes it", async () => {
    const listed = await runCli(["secret", "list", "--repo", repo]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^matrix-token: lxc151 \(\+ 1 operator\), 2 recipients, set today$/m);
    assert.equal(listed.stdout.includes(VALUE), false);

    // lxc110 is replaced by a new container, and matrix-token is given to it too.
    const h110b = ageKeygen(dir, "lxc110b");
    const file = path.join(repo, "secrets/secrets.yaml");
    const doc = parseDocument(readFileSync(file, "utf8"));
    doc.setIn(["hosts", "lxc110"], h110b.recipient);
    doc.setIn(["secrets", "matrix-token", "hosts"], ["lxc151", "lxc110"]);
    writeFileSync(file, doc.toString());
    const stale = await runCli(["secret", "list", "--repo", repo, "--json"]);
    assert.equal(stale.code, 1);
    const states = Object.fromEntries(
      (JSON.parse(stale.stdout).secrets as { name: string; state: string }[]).map((s) => [s.name, s.state]),
    );
    assert.deepEqual(states, { "matrix-token": "rekey", big: "rekey" });

    const noKey = await runCli(["secret", "rekey", "--repo", repo]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /--identity/);
    const hostKey = await runCli(["secret", "rekey", "--repo", repo, "--identity", h151.file]);
    assert.equal(hostKey.code, 1, "lxc151's key cannot read big");
    assert.match(hostKey.stderr, /SECRET_UNREADABLE/);
    const r = await runCli(["secret", "rekey", "--repo", repo, "--identity", operator.file]);
    assert.equal(r.code, 0, r.stderr);
    const armored = readFileSync(path.join(repo, "secrets/matrix-token.age"), "utf8");
    assert.equal(ageDecrypt(armored, h110b), VALUE);
    assert.equal(ageDecrypt(armored, h110), null, "the replaced container's key no longer reads it");
    assert.equal(
      ageDecrypt(readFileSync(path.join(repo, "secrets/big.age"), "utf8"), h110b)?.length,
      MAX_SECRET_BYTES,
    );
    assert.equal((await runCli(["secret", "list", "--repo", repo])).code, 0);
  });
  it("set refuses, before anything is written, a value a host would refuse to write as an env line; the value is never shown", async () => {
    mkdirSync(path.join(repo, "config"), { recursive: true });
    writeFileSync(
      path.join(repo, "config/lxc151.yaml"),
      [
        "host: lxc151",
        "steps:",
        "  - { name: matrix-token-env, kind: secret, secret: env-token, target: /etc/matrix-deploy.env, format: env, key: MATRIX_TOKEN }",
        "  - { name: tls-key, kind: secret, secret: tls-key, target: /etc/ssl/private/key.pem }",
        "",
      ].join("\n"),
    );
    writeFileSync(path.join(repo, "config/broken.yaml"), "steps: [unclosed\n");
    const set = (name: string, input: string, raw = true) =>
      runCliWithInput(
        ["secret", "set", name, "--hosts", "lxc151", ...(raw ? ["--raw"] : []), "--repo", repo],
        input,
      );
    // Metacharacters an env line carries (quoted), accepted; the host's writer takes the same.
    const good = 'Zq7 #hash $HOME ${X} "double" back\\slash \ufeffbom ünï';
    const ok = await set("env-token", good);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(envValueProblem(good), null);
    assert.equal(parse(Buffer.from(`${envLine("MATRIX_TOKEN", good)}\n`)).MATRIX_TOKEN, good);
    const files = () =>
      ["secrets/env-token.age", "secrets/secrets.yaml"].map((f) => readFileSync(path.join(repo, f), "utf8"));
    const before = files();

    const refused: [string, string, boolean][] = [
      ["a NUL", "Zq7-secret\0part", true],
      ["a line break inside", "Zq7-secret\npart", true],
      ["a trailing line break kept by --raw", "Zq7-secret-part\n", true],
      ["two trailing line breaks (one dropped without --raw)", "Zq7-secret-part\n\n", false],
      ["a CR", "Zq7-secret\rpart", true],
      ["a CRLF ending kept by --raw", "Zq7-secret-part\r\n", true],
      ["a tab", "Zq7-secret\tpart", true],
      ["an escape", "Zq7-secret\u001b[31mpart", true],
      ["a DEL", "Zq7-secret\u007fpart", true],
      ["both kinds of quotes", `Zq7-it's "secret"`, true],
      ["a single quote and a backslash", "Zq7-it's\\secret", true],
      ["a trailing backslash", "Zq7-secret-part\\", true],
    ];
    for (const [what, value, raw] of refused) {
      const r = await set("env-token", value, raw);
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.match(r.stderr, /ENV_VALUE_UNSAFE/, what);
      assert.match(
        r.stderr,
        /config\/lxc151\.yaml step matrix-token-env writes it as MATRIX_TOKEN= in \/etc\/matrix-deploy\.env/,
      );
      assert.match(r.stderr, /nothing was written/);
      assert.match(r.stderr, /openssl rand -hex 32|format file/, `${what}: a hint`);
      assert.equal(`${r.stdout}${r.stderr}`.includes("Zq7"), false, `${what}: the value is not shown`);
      assert.deepEqual(files(), before, `${what}: nothing written`);
      // The host's writer refuses the very same value.
      const sent = raw ? value : value.replace(/\r?\n$/, "");
      assert.throws(() => envLine("MATRIX_TOKEN", sent), /ENV_VALUE_UNSAFE|cannot be written/, what);
    }
    // A value no env line carries is fine where the secret is a whole file.
    const pem = "-----BEGIN PRIVATE KEY-----\nZq7abc\tdef\n-----END PRIVATE KEY-----\n";
    const file = await set("tls-key", pem);
    assert.equal(file.code, 0, file.stderr);
    assert.equal(ageDecrypt(readFileSync(path.join(repo, "secrets/tls-key.age"), "utf8"), h151), pem);
  });
});

describe("placing a value: env line, YAML node, whole file; diffs show fingerprints", () => {
  const HOSTILE = [
    "plain-token-123",
    "has # hash",
    "dollar $HOME and ${X}",
    "  spaces  ",
    'double "q"',
    "single 'q'",
    "back\\slash",
  ];

  it("env: a secret's every line is hidden in the diff, as dotenv reads the definition; CRLF, export, comments", () => {
    const key =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----";
    const live = Buffer.from(
      `PLAIN=shown-as-is\r\nexport DEPLOY_PRIVATE_KEY="${key}"\r\n# a comment kept\nAPP_TOKEN=unquoted#tail-systemd-reads\nAFTER='still shown'\n`,
    );
    assert.equal(parse(live).DEPLOY_PRIVATE_KEY, key, "the case is one dotenv reads as one value");
    const show = shown({ format: "env", key: "APP_TOKEN" }, live)?.toString() ?? "";
    for (const line of key.split("\n")) assert.equal(show.includes(line), false, `${line} in:\n${show}`);
    assert.equal(show.includes("unquoted"), false);
    assert.equal(show.includes("tail-systemd-reads"), false, "what follows on the line is hidden too");
    assert.equal(
      show,
      `PLAIN=shown-as-is\nexport DEPLOY_PRIVATE_KEY=<${fingerprint(key)}>\n# a comment kept\nAPP_TOKEN=<${fingerprint("unquoted")}>\nAFTER='still shown'\n`,
    );
    // Each line of a value of several lines is a secret of its own wherever text leaves the process.
    registerSecret(key);
    assert.equal(
      redact("a log line: b3BlbnNzaC1rZXktdjEAAAAABG5vbmUSECRETKEYMATERIAL"),
      "a log line: [redacted]",
    );
  });

  it("env: a value systemd's EnvironmentFile= continues past a line ending in `\\` is hidden whole, each line registered", async () => {
    const continued = "ZqOne-first-part\\\n  ZqTwo-second-part\\\nZqThree=looks-like-a-definition";
    const text = `${[
      "PLAIN=shown-as-is",
      `API_TOKEN=${continued}`,
      "AFTER=still shown",
      "ESCAPED_TOKEN=ZqFour-even-backslashes\\\\",
      "SHOWN_NEXT=visible-after-an-even-count",
      "CONTINUED_PLAIN=a\\",
      "DB_PASSWORD=ZqFive-dotenv-reads-me",
      "# a comment \\",
      "GH_TOKEN=ZqTen-after-a-continued-comment",
      'QUOTED_SECRET="ZqSix-dq\\',
      'ZqSeven-inside"\\',
      "ZqEleven-after-the-quote",
      "OPEN_TOKEN='ZqEight-unclosed",
      "ZqNine-to-the-end",
    ].join("\n")}\n`;
    for (const eol of ["\n", "\r\n"]) {
      const show =
        shown({ format: "env", key: "MATRIX_TOKEN" }, Buffer.from(text.replaceAll("\n", eol)))?.toString() ??
        "";
      assert.equal(show.includes("Zq"), false, show);
      const kept = show.split("\n");
      assert.deepEqual(
        kept.filter((l) => !l.includes("=<sha256:")),
        [
          "PLAIN=shown-as-is",
          "AFTER=still shown",
          "SHOWN_NEXT=visible-after-an-even-count",
          "CONTINUED_PLAIN=a\\",
          "# a comment \\",
        ],
        "only what either reader takes for a secret's value is hidden",
      );
      assert.ok(kept.includes(`API_TOKEN=<${fingerprint(continued)}>`), show);
    }
    const dir = mkdtempSync(path.join(tmpdir(), "env-continued-"));
    try {
      writeFileSync(path.join(dir, "app.env"), text);
      await readEnvFile(path.join(dir, "app.env"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    for (const part of [
      "ZqOne-first-part",
      "ZqTwo-second-part",
      "ZqThree=looks-like-a-definition",
      "ZqNine-to-the-end",
    ])
      assert.equal(redact(`a log line: ${part}.`), "a log line: [redacted].", part);
  });

  it("install's env-file diff hides every value whole: quoted lines, lines systemd joins after `\\`, `NAME: value`", () => {
    const text = [
      "PLAIN=ZqA-value",
      "CONTINUED=ZqB-one\\",
      "ZqC-two\\",
      "ZqD=three",
      'QUOTED="ZqE-first',
      'ZqF-second"',
      "COLON: ZqG-value",
      "# a comment stays",
      "OPEN='ZqH-never closed",
      "ZqI-rest",
      "",
    ].join("\r\n");
    const hidden = hideEnvValues(text);
    assert.equal(hidden.includes("Zq"), false, hidden);
    assert.equal(
      hidden,
      "PLAIN=<redacted>\nCONTINUED=<redacted>\nQUOTED=<redacted>\nCOLON=<redacted>\n# a comment stays\nOPEN=<redacted>",
    );
    assert.equal(hideEnvValues(""), "");
  });

  it("env: every spelling reads back identically through dotenv, other variables untouched", () => {
    const live = Buffer.from(
      "# the stack's env\nMATRIX_SERVER=https://m\nexport MATRIX_TOKEN=old-token-1\nWEBHOOK_SECRET='wh # sec'\nMATRIX_TOKEN=old-token-2\n",
    );
    for (const value of HOSTILE) {
      const next = place({ format: "env", key: "MATRIX_TOKEN" }, "/e", live, value);
      const env = parse(next);
      assert.equal(env.MATRIX_TOKEN, value, value);
      assert.equal(env.WEBHOOK_SECRET, "wh # sec");
      assert.equal(env.MATRIX_SERVER, "https://m");
      assert.equal((next.toString().match(/MATRIX_TOKEN/g) ?? []).length, 1, "one definition left");
      assert.equal(liveValue({ format: "env", key: "MATRIX_TOKEN" }, next), value);
      const show = shown({ format: "env", key: "MATRIX_TOKEN" }, next)?.toString() ?? "";
      assert.equal(show.includes(value.trim()), false);
      assert.equal(show.includes("wh # sec"), false, "other secret-named variables hidden too");
      assert.match(show, new RegExp(`MATRIX_TOKEN=<${fingerprint(value)}>`));
    }
    assert.throws(() => place({ format: "env", key: "MATRIX_TOKEN" }, "/e", live, "a\nb"), {
      code: "ENV_VALUE_UNSAFE",
    });
    assert.throws(() => place({ format: "env", key: "MATRIX_TOKEN" }, "/e", live, `both ' and "`), {
      code: "ENV_VALUE_UNSAFE",
    });
    assert.equal(
      parse(place({ format: "env", key: "NEW_TOKEN" }, "/e", null, "fresh-value")).NEW_TOKEN,
      "fresh-value",
    );
  });

  it("yaml: the node is set with comments and order kept; a missing or broken file is refused", () => {
    const live = Buffer.from(
      "# Draupnir\nhomeserverUrl: https://m\naccessToken: old-token-yaml\nweb:\n  port: 8080\n",
    );
    for (const value of [...HOSTILE, "syt_x: y", "- list", "{flow}", "'"]) {
      const next = place({ format: "yaml", key: "accessToken" }, "/c", live, value);
      const doc = parseDocument(next.toString());
      assert.equal(doc.get("accessToken"), value, value);
      assert.equal(doc.getIn(["web", "port"]), 8080);
      assert.match(next.toString(), /^# Draupnir/);
      const show = shown({ format: "yaml", key: "accessToken" }, next)?.toString() ?? "";
      assert.equal(show.includes(value) && value.length > 2, false, show);
      assert.match(show, new RegExp(`accessToken: <${fingerprint(value)}>`));
    }
    assert.equal(
      parseDocument(place({ format: "yaml", key: "a.b" }, "/c", live, "nested-v").toString()).getIn([
        "a",
        "b",
      ]),
      "nested-v",
    );
    assert.throws(() => place({ format: "yaml", key: "accessToken" }, "/c", null, "v-123456"), {
      code: "TARGET_WRITE_FAILED",
    });
    assert.throws(
      () => place({ format: "yaml", key: "accessToken" }, "/c", Buffer.from("a: [\n"), "v-123456"),
      {
        code: "TARGET_WRITE_FAILED",
      },
    );
  });

  it("file: the whole file, shown as its fingerprint", () => {
    const value = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
    assert.equal(place({ format: "file" }, "/k", Buffer.from("old"), value).toString(), value);
    assert.equal(
      shown({ format: "file" }, Buffer.from(value))?.toString(),
      `<secret ${fingerprint(value)}>\n`,
    );
  });
});

describe("start-up: a host without secret steps never loads the age library", { skip }, () => {
  it("the bundle leaves it out, and serve, status and validate of such a host do not import it", async () => {
    // The build npm ci made (rebuilding here would pull dist/ from under the tests that run it meanwhile).
    const bundle = readFileSync(path.join(PROJECT, "dist/src/agent.cjs"), "utf8");
    assert.equal(bundle.includes("age-encryption.org/v1"), false, "the library's code is not in the bundle");
    assert.match(
      bundle,
      /Promise\.resolve\(\)\.then\(\(\)=>__toESM\(require\("\.\/vendor\/age-encryption\.cjs"\)/,
      "it is required where used, from its own file",
    );

    const dir = mkdtempSync(path.join(tmpdir(), "secret-startup-"));
    try {
      // Hooks in the child that report every specifier it imports or requires.
      const hook = path.join(dir, "hook.mjs");
      writeFileSync(
        path.join(dir, "resolve.mjs"),
        "export async function resolve(s, c, next) { if (/age-encryption|@noble/.test(s)) process.stderr.write(`LOADED ${s}\\n`); return next(s, c); }\n",
      );
      writeFileSync(
        hook,
        [
          'import Module, { register } from "node:module";',
          `register(${JSON.stringify(`file://${path.join(dir, "resolve.mjs")}`)});`,
          "const load = Module._load;",
          "Module._load = function (s, ...rest) { if (/age-encryption|@noble/.test(s)) process.stderr.write(`LOADED ${s}\\n`); return load.call(this, s, ...rest); };",
          "",
        ].join("\n"),
      );
      const repo = path.join(dir, "repo");
      mkdirSync(path.join(repo, "landing"), { recursive: true });
      writeFileSync(path.join(repo, "landing/index.html"), "x\n");
      git(repo, "init", "--quiet", "-b", "main");
      const manifest = writeManifest(dir, {
        steps: [{ name: "page", kind: "file", source: "landing/index.html", targets: ["/index.html"] }],
      });
      const bin = path.join(PROJECT, "dist/src/bin.js");
      for (const args of [
        ["validate", "--config", manifest, "--repo", repo],
        ["status", "--config", manifest, "--state-dir", dir],
      ]) {
        const r = spawnSync(process.execPath, ["--import", hook, bin, ...args], { encoding: "utf8" });
        assert.equal(r.stderr.includes("LOADED"), false, `${args[0]}: ${r.stderr}`);
      }
      // The hook does see the library when something does load it: the check above can fail.
      for (const load of [
        'await import("age-encryption")',
        `createRequire(${JSON.stringify(path.join(PROJECT, "dist/src/agent.cjs"))})("./vendor/age-encryption.cjs")`,
      ]) {
        const probe = spawnSync(
          process.execPath,
          [
            "--import",
            hook,
            "--input-type=module",
            "-e",
            `import { createRequire } from "node:module"; ${load};`,
          ],
          { cwd: PROJECT, encoding: "utf8" },
        );
        assert.match(probe.stderr, /LOADED .*age-encryption/, load);
      }
      // serve: up, listening, a start-up reconcile, still without it.
      const root = hostRoot(dir, "startup-webhook-secret-0123456789");
      const serve = spawn(
        process.execPath,
        [
          "--import",
          hook,
          bin,
          "serve",
          "--config",
          manifest,
          "--repo",
          repo,
          "--root",
          root,
          "--listen",
          "127.0.0.1:0",
        ],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let out = "";
      const gone = new Promise((r) => serve.on("close", r));
      serve.stdout.on("data", (d) => {
        out += d;
      });
      serve.stderr.on("data", (d) => {
        out += d;
      });
      const deadline = Date.now() + 15_000;
      let over = false;
      void gone.then(() => {
        over = true;
      });
      while (!/"msg":"listening"/.test(out) && !over && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 500));
      serve.kill("SIGTERM");
      await gone;
      assert.match(out, /"msg":"listening"/);
      assert.equal(out.includes("LOADED"), false, out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
