import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { type DefaultTreeAdapterMap, parse } from "parse5";
import { parseDocument } from "yaml";
import { cinnyConfigProblems, cinnyConfigSchema } from "../src/content/cinny-config.js";

/** The deployed content other than transforms and units: Cinny's config, the landing page, Draupnir's config. */

type Node = DefaultTreeAdapterMap["node"];
type Element = DefaultTreeAdapterMap["element"];

function elements(node: Node, out: Element[] = []): Element[] {
  if ("tagName" in node) out.push(node);
  if ("childNodes" in node) for (const c of node.childNodes) elements(c, out);
  if ("content" in node && node.content) elements(node.content, out);
  return out;
}
const attr = (el: Element, name: string) => el.attrs.find((a) => a.name === name)?.value;
const textOf = (node: Node): string =>
  "value" in node && node.nodeName === "#text"
    ? node.value
    : "childNodes" in node
      ? node.childNodes.map(textOf).join("")
      : "";

const SPACE = "!-1ZBnAH-JiCOV8MGSKN77zDGTuI3pgSdy8Unu_DrDyc";

describe("cinny/config.json", () => {
  const text = readFileSync("cinny/config.json", "utf8");
  it("has only keys Cinny reads, with the right types", () => {
    assert.deepEqual(cinnyConfigProblems(text), []);
  });
  it("defaults to matrix.lotusguild.org and features the Lotus Guild space and General", () => {
    const c = cinnyConfigSchema.parse(JSON.parse(text));
    assert.equal(c.homeserverList?.[c.defaultHomeserver ?? 0], "matrix.lotusguild.org");
    assert.deepEqual(c.featuredCommunities?.spaces, [SPACE]);
    assert.ok(c.featuredCommunities?.rooms?.includes("!wfokQ1-pE896scu_AOcCBA2s3L4qFo-PTBAFTd0WMI0"));
  });
  it("the check rejects what Cinny would misread", () => {
    assert.match(
      cinnyConfigProblems('{"homeserverList":["a.org"],"defaultHomeserver":3}').join(),
      /defaultHomeserver must index into homeserverList/,
    );
    assert.match(
      cinnyConfigProblems('{"homeServerList":["a.org"]}').join(),
      /homeServerList: not a key Cinny reads/,
    );
    assert.match(cinnyConfigProblems("{,}").join(), /not valid JSON/);
  });
});

describe("landing/index.html", () => {
  const html = readFileSync("landing/index.html", "utf8");
  const doc = parse(html);
  const all = elements(doc);
  const by = (tag: string) => all.filter((e) => e.tagName === tag);

  it("is a complete, accessible document", () => {
    assert.equal(attr(by("html")[0] as Element, "lang"), "en");
    assert.equal(textOf(by("title")[0] as Element), "Lotus Guild Matrix");
    assert.ok(by("meta").some((m) => attr(m, "name") === "viewport"));
    assert.equal(by("h1").length, 1);
    assert.ok(by("main").length === 1, "one main landmark");
    for (const section of by("section")) {
      const labelled = attr(section, "aria-labelledby");
      assert.ok(
        labelled && all.some((e) => attr(e, "id") === labelled),
        "sections are labelled by a heading",
      );
    }
  });

  it("has light and dark styles and no third-party assets", () => {
    const css = by("style").map(textOf).join("\n");
    assert.match(css, /@media \(prefers-color-scheme: dark\)/);
    assert.ok(
      by("meta").some(
        (m) => attr(m, "name") === "color-scheme" && /light dark/.test(attr(m, "content") ?? ""),
      ),
    );
    assert.equal(by("script").length, 0);
    for (const el of all) {
      for (const a of ["src", "srcset"]) assert.equal(attr(el, a), undefined, `${el.tagName} loads ${a}`);
    }
    assert.ok(by("link").every((l) => !/^https?:/.test(attr(l, "href") ?? "")));
    assert.doesNotMatch(css, /url\(|@import/);
  });

  it("recommends Cinny at chat.lotusguild.org and Element, explains joining the space; every link is sound", () => {
    const links = by("a").map((a) => ({ href: attr(a, "href") ?? "", text: textOf(a).trim() }));
    assert.ok(links.some((l) => l.href === "https://chat.lotusguild.org/" && l.text === "Cinny"));
    assert.ok(links.some((l) => /element\.io/.test(l.href)));
    assert.ok(links.some((l) => l.href.startsWith(`https://matrix.to/#/${SPACE}`)));
    for (const l of links) {
      assert.ok(l.text.length > 0, `link ${l.href} has text`);
      assert.doesNotThrow(() => new URL(l.href), l.href);
      assert.equal(new URL(l.href).protocol, "https:", l.href);
    }
    assert.match(html, /matrix\.lotusguild\.org/);
  });
});

describe("draupnir/production.yaml", () => {
  const doc = parseDocument(readFileSync("draupnir/production.yaml", "utf8"));
  const config = doc.toJS() as Record<string, unknown>;
  it("parses and keeps the token redacted", () => {
    assert.deepEqual(doc.errors, []);
    assert.equal(config.accessToken, "REDACTED");
  });
  it("points at the homeserver, the management room and every protected room", () => {
    assert.equal(config.homeserverUrl, "https://matrix.lotusguild.org");
    assert.equal(config.rawHomeserverUrl, "https://matrix.lotusguild.org");
    assert.equal(config.managementRoom, "!mEvR5fe3jMmzwd-FwNygD72OY_yu8H3UP_N-57oK7MI");
    const rooms = (config.protectedRooms as string[]).join("\n");
    for (const id of [
      SPACE,
      "!wfokQ1-pE896scu_AOcCBA2s3L4qFo-PTBAFTd0WMI0",
      "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg",
    ])
      assert.ok(rooms.includes(id), id);
  });
  it("serves healthz on 8081 and abuse reports on 8080", () => {
    const health = (config.health as { healthz: Record<string, unknown> }).healthz;
    assert.deepEqual(
      [health.enabled, health.port, health.endpoint, health.healthyStatus],
      [true, 8081, "/healthz", 200],
    );
    const web = config.web as { enabled: boolean; port: number; abuseReporting: { enabled: boolean } };
    assert.deepEqual([web.enabled, web.port, web.abuseReporting.enabled], [true, 8080, true]);
  });
  it("records both ban-list subscriptions", () => {
    const text = readFileSync("draupnir/production.yaml", "utf8");
    assert.match(text, /#community-moderation-effort-bl:neko\.dev/);
    assert.match(text, /#matrix-org-coc-bl:matrix\.org/);
  });
});

describe("README references", () => {
  it("every README section a deployed file or an error hint points to exists", () => {
    const headings = new Set(
      readFileSync("README.md", "utf8")
        .split("\n")
        .filter((l) => l.startsWith("#"))
        .map((l) => l.replace(/^#+\s*/, "").toLowerCase()),
    );
    const files = ["draupnir/production.yaml", "src/matrix/client.ts", "src/steps/draupnir-config.ts"];
    const refs = files.flatMap((f) =>
      [...readFileSync(f, "utf8").matchAll(/README(?::|,)\s*"?([A-Z][a-z ]+[a-z])"?/g)].map((m) => [
        f,
        m[1] ?? "",
      ]),
    );
    assert.equal(refs.length, files.length, "each file names its section");
    for (const [file, section] of refs)
      assert.ok(headings.has(String(section).toLowerCase()), `${file}: ${section}`);
  });
});
