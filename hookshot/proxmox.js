// Proxmox VE notification target (webhook with a Discord-embed body, as configured on this cluster):
// { embeds: [{ title, description, color, fields: [{ name, value, inline }] }] }. Titles can end with a
// space; the "Test" notification has few fields. The Severity field picks the emoji; other fields become
// details; the description (backup tables, logs) is shown preformatted and cut. Shared helpers: lib/prelude.js.
var embed = obj(list(data.embeds)[0]);
var fields = list(embed.fields).map(obj);
var severity = "";
var details = [];
fields.forEach(function (f) {
  if (text(f.name).toLowerCase() === "severity") severity = text(f.value).toLowerCase();
  else details.push([text(f.name, "Field"), f.value]);
});
var title = text(embed.title);
var emoji =
  /^test notification/i.test(title)
    ? "🧪"
    : severity === "error"
      ? "❌"
      : severity === "warning"
        ? "⚠️"
        : /successful|finished|ok$/i.test(title)
          ? "✅"
          : severity === "notice"
            ? "📣"
            : "ℹ️";

if (!title && !fields.length) {
  postUnknown("Proxmox VE", text(data.content, text(data.title)), data);
} else {
  post(emoji, "Proxmox: " + text(title, "notification"), (severity ? [["Severity", severity]] : []).concat(details, [block(embed.description, 1500)]), embed.url);
}
