// Shared helpers for every transform in hookshot/. deploy-agent prepends this file to each transform before
// pushing it, so the function stored in room state is self-contained. It runs inside hookshot's QuickJS:
// no console, require or timers; the transform must assign the global `result` (never var/let/const).

/** HTML-escapes any value; null and undefined become "". */
function esc(value) {
  return String(value === undefined || value === null ? "" : value).replace(/[&<>"']/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
  });
}

/** A trimmed non-empty string, or the fallback. */
function text(value, fallback) {
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (typeof value !== "string") return fallback === undefined ? "" : fallback;
  var t = value.trim();
  return t === "" ? (fallback === undefined ? "" : fallback) : t;
}

/** An absolute http(s) URL, or "" (relative or empty links from senders are dropped). */
function httpUrl(value) {
  var v = text(value);
  return /^https?:\/\/[^\s]+$/i.test(v) ? v : "";
}

function obj(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function list(value) {
  return Array.isArray(value) ? value : [];
}

/** "1.5 GiB" from a byte count. */
function bytes(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "";
  var units = ["B", "KiB", "MiB", "GiB", "TiB"];
  var i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n = n / 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

/** "S02E09" */
function episodeCode(season, episode) {
  var pad = function (n) {
    return (n < 10 ? "0" : "") + n;
  };
  return typeof season === "number" && typeof episode === "number" ? "S" + pad(season) + "E" + pad(episode) : "";
}

/**
 * Sets `result` in the house style shared by every service:
 *   plain: "<emoji> <title>" then one line per detail, then the link
 *   html:  "<emoji> <b><a href=link>title</a></b>" then <br>-separated details, labels in bold
 * details: array of strings, [label, value] pairs (empty values are left out), or prepared
 * { plain, html } lines whose html the caller has escaped.
 */
function post(emoji, title, details, link, msgtype) {
  var url = httpUrl(link);
  var plain = [emoji + " " + title];
  var html = [emoji + " <b>" + (url ? '<a href="' + esc(url) + '">' + esc(title) + "</a>" : esc(title)) + "</b>"];
  list(details).forEach(function (d) {
    if (d && typeof d === "object" && typeof d.plain === "string" && typeof d.html === "string") {
      plain.push(d.plain);
      html.push(d.html);
    } else if (Array.isArray(d)) {
      var v = text(d[1]);
      if (v === "") return;
      plain.push(d[0] + ": " + v);
      html.push("<b>" + esc(d[0]) + ":</b> " + esc(v).replace(/\n/g, "<br>"));
    } else if (text(d) !== "") {
      plain.push(text(d));
      html.push(esc(text(d)).replace(/\n/g, "<br>"));
    }
  });
  if (url) plain.push(url);
  result = { version: "v2", plain: plain.join("\n"), html: html.join("<br>"), msgtype: msgtype || "m.notice" };
}

/** A prepared line with a link: "label: url" in plain, an anchor in html; nothing for a non-http URL. */
function linkLine(label, url) {
  var u = httpUrl(url);
  return u ? { plain: label + ": " + u, html: '<a href="' + esc(u) + '">' + esc(label) + "</a>" } : "";
}

/** A prepared preformatted block, cut to max characters. */
function block(value, max) {
  var t = text(value);
  if (t === "") return "";
  if (t.length > max) t = t.slice(0, max) + "\n…";
  return { plain: t, html: "<pre>" + esc(t) + "</pre>" };
}

/** For payloads a transform does not recognise: a readable message instead of "No content". */
function postUnknown(service, what, data) {
  var keys = Object.keys(obj(data)).slice(0, 8).join(", ");
  post("ℹ️", service + ": " + (text(what) || "unrecognised notification"), keys ? [["Fields", keys]] : []);
}

/** Details of a grabbed release, as every *arr app sends them. */
function releaseDetails(release, data) {
  var r = obj(release);
  return [
    ["Release", r.releaseTitle],
    ["Quality", r.quality],
    ["Size", bytes(r.size)],
    ["Indexer", r.indexer],
    ["Client", obj(data).downloadClient],
  ];
}

/** Events every *arr app (Sonarr, Radarr, Lidarr, Readarr) sends alike; true when it posted one. */
function arrCommonEvent(app, data, link) {
  switch (data.eventType) {
    case "Test":
      post("🧪", app + " test notification", ["Notifications from " + app + " reach this room."], link);
      return true;
    case "Health":
      post(data.level === "error" ? "❌" : "⚠️", app + " health: " + text(data.message, "problem reported"), [["Check", data.type]], data.wikiUrl);
      return true;
    case "HealthRestored":
      post("💚", app + " health restored: " + text(data.message, "problem resolved"), [["Check", data.type]], data.wikiUrl);
      return true;
    case "ApplicationUpdate":
      post("🆙", app + " updated", [["From", data.previousVersion], ["To", data.newVersion], text(data.message)], link);
      return true;
  }
  return false;
}
