// Grafana unified alerting (webhook contact point) → Spam and Stuff. One message per notification:
// a headline with the firing/resolved counts, then one line per alert with its summary, severity,
// instance, values and links (source, panel or dashboard, runbook, silence). Grafana's "Test" button
// sends a TestAlert; any other body gets a generic message. Shared helpers: lib/prelude.js.
var alerts = list(data.alerts).map(obj);
var external = httpUrl(data.externalURL);

function values(v) {
  return Object.keys(obj(v))
    .map(function (k) {
      return k + "=" + v[k];
    })
    .join(", ");
}

function alertLines(a) {
  var labels = obj(a.labels);
  var notes = obj(a.annotations);
  var mark = a.status === "resolved" ? "✅" : "🔥";
  var name = text(labels.alertname, "alert");
  var about = text(notes.summary, text(notes.description));
  var facts = [
    ["severity", labels.severity],
    ["instance", labels.instance],
    ["values", values(a.values)],
  ].filter(function (f) {
    return text(f[1]) !== "";
  });
  var factText = facts
    .map(function (f) {
      return f[0] + " " + text(f[1]);
    })
    .join(", ");
  var links = [
    ["source", a.generatorURL],
    ["panel", httpUrl(a.panelURL) || a.dashboardURL],
    ["runbook", notes.runbook_url],
    ["silence", a.status === "resolved" ? "" : a.silenceURL],
  ].filter(function (l) {
    return httpUrl(l[1]) !== "";
  });
  var plain = mark + " " + name + (about ? ": " + about : "") + (factText ? " (" + factText + ")" : "");
  var html = mark + " <b>" + esc(name) + "</b>" + (about ? ": " + esc(about) : "") + (factText ? " (" + esc(factText) + ")" : "");
  if (links.length) {
    plain += links
      .map(function (l) {
        return "\n   " + l[0] + ": " + httpUrl(l[1]);
      })
      .join("");
    html +=
      " — " +
      links
        .map(function (l) {
          return '<a href="' + esc(httpUrl(l[1])) + '">' + esc(l[0]) + "</a>";
        })
        .join(" · ");
  }
  return { plain: plain, html: html };
}

if (!alerts.length) {
  post("📊", "Grafana: " + text(data.title, "notification"), [text(data.message)], external);
} else if (alerts.length === 1 && obj(alerts[0].labels).alertname === "TestAlert") {
  post("🧪", "Grafana test notification", [text(obj(alerts[0].annotations).summary), "Alerts from Grafana reach this room."], external);
} else {
  var firing = alerts.filter(function (a) {
    return a.status !== "resolved";
  }).length;
  var resolved = alerts.length - firing;
  var counts = [firing ? firing + " firing" : "", resolved ? resolved + " resolved" : ""].filter(Boolean).join(", ");
  var group = text(obj(data.commonLabels).alertname, text(obj(data.groupLabels).alertname, "alerts"));
  post(firing ? "🔥" : "✅", "Grafana: " + group + " — " + counts, alerts.map(alertLines), external, firing ? "m.text" : "m.notice");
}
