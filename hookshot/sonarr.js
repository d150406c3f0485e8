// Sonarr (v3/v4) webhook → Spam and Stuff. Events: Test, Grab, Download (import or upgrade), Rename,
// SeriesAdd, SeriesDelete, EpisodeFileDelete, Health, HealthRestored, ApplicationUpdate,
// ManualInteractionRequired; anything else gets a generic message. Shared helpers: lib/prelude.js.
var app = text(data.instanceName, "Sonarr");
var series = obj(data.series);
var show = text(series.title, "Unknown series") + (series.year ? " (" + series.year + ")" : "");
var episodes = list(data.episodes)
  .map(function (e) {
    return [episodeCode(e.seasonNumber, e.episodeNumber), text(e.title)].filter(Boolean).join(" ");
  })
  .join(", ");
var file = obj(data.episodeFile);
var base = httpUrl(data.applicationUrl);
var link = base && series.titleSlug ? base.replace(/\/$/, "") + "/series/" + series.titleSlug : base;

if (!arrCommonEvent(app, data, base)) {
  switch (data.eventType) {
    case "Grab":
      post("⬇️", app + ": grabbed " + show, [["Episodes", episodes]].concat(releaseDetails(data.release, data)), link);
      break;
    case "Download":
      post(data.isUpgrade ? "⏫" : "✅", app + ": " + (data.isUpgrade ? "upgraded " : "imported ") + show, [
        ["Episodes", episodes],
        ["Quality", file.quality],
        ["File", file.relativePath],
      ], link);
      break;
    case "Rename":
      post("📝", app + ": renamed files of " + show, [["Files", list(data.renamedEpisodeFiles).length || ""]], link);
      break;
    case "SeriesAdd":
      post("➕", app + ": added " + show, [["Path", series.path]], link);
      break;
    case "SeriesDelete":
      post("🗑️", app + ": deleted " + show, [["Files deleted", data.deletedFiles ? "yes" : "no"]], base);
      break;
    case "EpisodeFileDelete":
      post("🗑️", app + ": deleted an episode file of " + show, [
        ["Episodes", episodes],
        ["Reason", data.deleteReason],
        ["File", file.relativePath],
      ], link);
      break;
    case "ManualInteractionRequired":
      post("✋", app + ": manual import needed for " + show, [
        ["Episodes", episodes],
        ["Download", obj(data.release).releaseTitle || data.downloadId],
        ["Client", data.downloadClient],
      ], link);
      break;
    default:
      postUnknown(app, data.eventType, data);
  }
}
