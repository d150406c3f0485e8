import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { compileError, declaresResult, runTransform, transformProblem } from "../src/hookshot/transform.js";
import { loadManifest } from "../src/manifest/load.js";
import { assemble, type HookshotStep } from "../src/steps/hookshot.js";

/**
 * Every transform in hookshot/ run the way hookshot 7.x runs it (lib/prelude.js prepended, as the agent
 * deploys it) on real payload shapes from each service, asserting on what the room would show.
 */

const FIXTURES = path.resolve("test/fixtures/payloads");
const readRepo = async (p: string) => readFileSync(path.resolve(p));

async function hookshotStep(): Promise<HookshotStep> {
  const { manifest } = await loadManifest(path.resolve("config/lxc151.yaml"), {
    envFile: path.resolve("config/demo.env"),
    processEnv: {},
  });
  const step = manifest.steps.find((s) => s.kind === "hookshot");
  assert.ok(step?.kind === "hookshot");
  return step;
}

async function render(service: string, payload: unknown) {
  const step = await hookshotStep();
  const src = await assemble(step, readRepo, `hookshot/${service}.js`);
  const out = await runTransform(src, payload);
  assert.ok(out.content, `${service} produced a message`);
  return out.content;
}

function fixture(service: string, name: string): unknown {
  return JSON.parse(readFileSync(path.join(FIXTURES, service, name), "utf8"));
}

/** service/fixture → patterns the plain text and the html must show. */
const EXPECT: Record<string, { plain: RegExp[]; html?: RegExp[] }> = {
  "bazarr/episode-subtitles-downloaded.json": {
    plain: [/^💬 Bazarr\nFrieren: Beyond Journey’s End .* subtitles downloaded/],
  },
  "bazarr/warning.json": { plain: [/^⚠️ Bazarr: provider throttled\nopensubtitlescom throttled/] },
  "bazarr/failure.json": {
    plain: [/^❌ Bazarr\nLe Bureau des Légendes/],
    html: [/&lt;provider&gt; timeout &amp; retry/],
  },
  "grafana/firing-single.json": {
    plain: [
      /^🔥 Grafana: High CPU usage — 1 firing/,
      /CPU > 90% on web-01/,
      /severity critical/,
      /values B=97.2, C=1/,
      /runbook: https:\/\/wiki/,
    ],
    html: [
      /<b>High CPU usage<\/b>: CPU &gt; 90%/,
      /<a href="https:\/\/wiki\.example\.com\/runbooks\/cpu\?host=web-01&amp;level=critical">runbook<\/a>/,
    ],
  },
  "grafana/test-notification.json": { plain: [/^🧪 Grafana test notification\nNotification test/] },
  "grafana/mixed-resolved-null-values.json": {
    plain: [
      /^🔥 Grafana: alerts — 1 firing, 1 resolved/,
      /🔥 Synapse Down: Synapse is down \(severity critical, instance 10\.10\.10\.29:9000\)/,
      /✅ PG Connection Saturation: Connections back under 80% \(severity warning, values A=71\.5\)/,
    ],
    html: [/<a href="https:\/\/dashboard\.lotusguild\.org\/d\/matrix">panel<\/a>/],
  },
  "lidarr/grab.json": { plain: [/^⬇️ Lidarr: grabbed Sigur Rós/, /Albums: Ágætis byrjun/] },
  "lidarr/download-upgrade.json": {
    plain: [
      /^⏫ Lidarr: upgraded Sigur Rós\nAlbums: \( \)\nTracks: 2/,
      /https:\/\/lidarr\.lotusguild\.org\/artist\/f6f2326f/,
    ],
  },
  "lidarr/unknown-event.json": { plain: [/^ℹ️ Lidarr: SomethingNew/] },
  "deploy-agent/run-succeeded.json": {
    plain: [
      /^✅ lxc151 deployed 3f2c9a7b1d4e\nCommit: 3f2c9a7b1d4e “grafana: shorter alert titles”\nTook: 1\.2 s\nNotes: restart deferred until no call is active/,
      /http:\/\/10\.10\.10\.29:9500\/status$/,
    ],
  },
  "deploy-agent/run-failed.json": {
    plain: [
      /^❌ lxc110: draupnir-config failed again \(3×\)/,
      /Error: HEALTH_CHECK_FAILED: draupnir\.service was unhealthy/,
      /Hint: journalctl -u draupnir\.service -n 50/,
    ],
    html: [/protect the new room &lt;script&gt;/],
  },
  "deploy-agent/run-error.json": {
    plain: [/^⚠️ lxc106 could not deploy\nError: FETCH_FAILED: git fetch origin main failed/],
  },
  "deploy-agent/clone-reset-failed.json": {
    plain: [
      /^⚠️ lxc151: its clone could not be reset to the deployed commit\nCommit: 0123456789ab\nError: GIT_FAILED: the clone's work tree could not be reset/,
      /Repair: git -C \/opt\/matrix-config reset --hard 0123456789ab/,
    ],
  },
  "deploy-agent/job-done.json": {
    plain: [/^🔁 lxc151: no call active .*restarted livekit-server\.service$/],
  },
  "owncast/stream-started.json": {
    plain: [/^🔴 Retro Nights is live: Speedrun & Chill: Super Metroid <Any%>/],
    html: [/Speedrun &amp; Chill: Super Metroid &lt;Any%&gt;/],
  },
  "owncast/chat.json": { plain: [/^ℹ️ Owncast: CHAT/] },
  "owncast/stream-stopped.json": { plain: [/^⏹️ New Owncast Server stream ended/] },
  "proxmox/replication-error.json": {
    plain: [/^❌ Proxmox: Replication Job: 151-0 failed\nSeverity: error\nNode: pve1/, /got timeout/],
  },
  "proxmox/test.json": { plain: [/^🧪 Proxmox: Test notification\nSeverity: info/] },
  "proxmox/vzdump-success.json": {
    plain: [/^✅ Proxmox: vzdump backup status \(pve1\.home\.arpa\): backup successful\n/, /docker-host/],
    html: [/<pre>/],
  },
  "radarr/download.json": { plain: [/^(✅|⏫) Radarr: (imported|upgraded) Amélie \(2001\)/] },
  "radarr/test.json": { plain: [/^🧪 Radarr test notification/] },
  "radarr/manual-interaction.json": {
    plain: [/^✋ Radarr: manual import needed for Amélie \(2001\)\nDownload: Amelie\.2001/],
  },
  "readarr/grab.json": {
    plain: [/^⬇️ Readarr: grabbed Ursula K\. Le Guin\nBooks: The Dispossessed/, /Size: 1\.1 MiB/],
  },
  "readarr/health-restored.json": {
    plain: [
      /^💚 Readarr health restored: All indexers are available/,
      /https:\/\/wiki\.servarr\.com\/readarr/,
    ],
  },
  "seerr/media-pending-movie.json": {
    plain: [/^🙋 New request: Dune: Part Two \(2024\)\nType: movie\nRequested by: Sam/],
  },
  "seerr/test.json": { plain: [/^🧪 Seerr test notification\nCheck check/] },
  "seerr/issue-comment.json": {
    plain: [/^💬 Issue comment: Severance \(2022\)/, /Comment: Re-grabbed, <try> again/],
    html: [/Re-grabbed, &lt;try&gt; again/],
  },
  "sonarr/grab.json": { plain: [/^⬇️ Sonarr: grabbed Severance \(2022\)\nEpisodes: S02E09 The After Hours/] },
  "sonarr/health.json": { plain: [/^⚠️ Sonarr health: Indexers unavailable/] },
  "sonarr/test.json": { plain: [/^🧪 Sonarr test notification/] },
  "sonarr/download-upgrade.json": {
    plain: [
      /^⏫ Sonarr: upgraded Severance \(2022\)/,
      /https:\/\/sonarr\.lotusguild\.org\/series\/severance$/,
    ],
  },
  "tinker-tickets/ticket-created.json": {
    plain: [/^🚨 New ticket: #118 Voice room drops <everyone> after 5 min\nBy: lonely/],
    html: [/&lt;everyone&gt;/, /href="https:\/\/tickets\.lotusguild\.org\/t\/118"/],
  },
  "tinker-tickets/ticket-updated.json": {
    plain: [/Changes: status: open → in progress; assignee: – → jared/],
  },
  "uptime-kuma/down-v1.json": { plain: [/^🔴 .* is down/] },
  "uptime-kuma/up-v2.json": { plain: [/^✅ .* is up/, /Ping: \d+ ms/] },
  "uptime-kuma/maintenance.json": { plain: [/^🔧 Synapse is in maintenance\nMessage: Under maintenance/] },
  "uptime-kuma/test.json": { plain: [/^🧪 Uptime Kuma: Uptime Kuma Testing/] },
};

const services = readdirSync("hookshot")
  .filter((f) => f.endsWith(".js"))
  .map((f) => f.replace(/\.js$/, ""));

describe("hookshot transforms", () => {
  it("covers the eleven services and deploy-agent's own notices, each with fixtures", () => {
    assert.deepEqual(services.sort(), [
      "bazarr",
      "deploy-agent",
      "grafana",
      "lidarr",
      "owncast",
      "proxmox",
      "radarr",
      "readarr",
      "seerr",
      "sonarr",
      "tinker-tickets",
      "uptime-kuma",
    ]);
    for (const s of services) assert.ok(readdirSync(path.join(FIXTURES, s)).length > 0, s);
  });

  for (const service of services) {
    describe(service, () => {
      it("passes hookshot's compile check and never declares result", async () => {
        const step = await hookshotStep();
        const src = await assemble(step, readRepo, `hookshot/${service}.js`);
        assert.equal(await compileError(src), null);
        assert.equal(await declaresResult(src), false);
        assert.equal(await transformProblem(src), null);
        const code = src.replace(/\/\/[^\n]*/g, "");
        assert.doesNotMatch(code, /\b(console|require|setTimeout|setInterval|process)\b/);
      });

      for (const name of readdirSync(path.join(FIXTURES, service))) {
        it(`renders ${name}`, async () => {
          const content = await render(service, fixture(service, name));
          assert.notEqual(content.plain, "No content");
          assert.equal(content.msgtype === "m.notice" || content.msgtype === "m.text", true);
          assert.equal(typeof content.html, "string");
          const want = EXPECT[`${service}/${name}`];
          assert.ok(want, `expectations for ${service}/${name}`);
          for (const re of want.plain) assert.match(content.plain, re);
          for (const re of want.html ?? []) assert.match(content.html ?? "", re);
        });
      }

      it("survives an empty or unexpected body with a readable message", async () => {
        for (const body of [{}, { eventType: 7, type: null, alerts: "x", embeds: [null] }, []]) {
          const content = await render(service, body);
          assert.ok(content.plain.length > 3);
          assert.notEqual(content.plain, "No content");
          assert.doesNotMatch(content.plain, /undefined|\[object Object\]|NaN/);
        }
      });

      it("escapes every payload value that reaches html", async () => {
        const evil = `<img src=x onerror=alert(1)> & "q" 'a'`;
        const payloads = [
          {
            eventType: "Grab",
            instanceName: evil,
            series: { title: evil },
            movie: { title: evil },
            artist: { name: evil },
            author: { name: evil },
          },
          { type: "STREAM_STARTED", eventData: { name: evil, streamTitle: evil } },
          { embeds: [{ title: evil, description: evil, fields: [{ name: evil, value: evil }] }] },
          { heartbeat: { status: 0, msg: evil }, monitor: { name: evil } },
          { notification_type: "MEDIA_PENDING", subject: evil, message: evil },
          { title: evil, message: evil, type: "info" },
          { event: "ticket.created", ticket: { id: 1, title: evil }, actor: { name: evil } },
          { alerts: [{ status: "firing", labels: { alertname: evil }, annotations: { summary: evil } }] },
        ];
        for (const p of payloads) {
          const { html } = await render(service, p);
          assert.doesNotMatch(html ?? "", /<img|onerror=alert\(1\)> |"q"|'a'/);
        }
      });
    });
  }

  it("refuses what hookshot would refuse", async () => {
    assert.match((await transformProblem("result = {")) ?? "", /does not compile/);
    assert.match(
      (await transformProblem('const result = { version: "v2", plain: "x" };')) ?? "",
      /declares `result`/,
    );
    assert.equal(
      await transformProblem('// let result = 1\nresult = { version: "v2", plain: "let result" };'),
      null,
    );
    await assert.rejects(runTransform('result = { plain: "x" };', {}), /didn't specify version = v2/);
    await assert.rejects(runTransform("while (true) {}", {}), /Transformation failed to run: .*interrupted/i);
  });
});

describe("declaresResult: read from the syntax tree", () => {
  const cases: [string, string, boolean][] = [
    ["plain assignment", 'result = { version: "v2", plain: "x" };', false],
    ["let", 'let result = { version: "v2", plain: "x" };', true],
    ["var deep in a block", "if (data) { for (;;) { var result = 1; break; } }", true],
    ["const after a URL string", 'const u = "https://x"; let result = 1;', true],
    ["const after a template with //", "const t = `a // b ${data.x}`; const result = t;", true],
    ["destructuring", "const { result } = data;", true],
    ["array destructuring with default", "let [a, result = 2] = [1];", true],
    ["only in a comment", '// let result = 1\nresult = { version: "v2", plain: "x" };', false],
    ["only in a string", 'const s = "let result = 1"; result = { version: "v2", plain: s };', false],
    [
      "a property named result",
      'const o = { result: 1 }; result = { version: "v2", plain: String(o.result) };',
      false,
    ],
    [
      "resultText is another name",
      'const resultText = "x"; result = { version: "v2", plain: resultText };',
      false,
    ],
    ["with a top-level return", "if (!data) return; let result = 1;", true],
  ];
  for (const [name, src, expected] of cases) {
    it(`${name}: ${expected ? "declares" : "does not declare"} result`, async () => {
      assert.equal(await declaresResult(src), expected);
    });
  }
});
