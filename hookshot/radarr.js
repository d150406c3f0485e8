// Radarr (v4/v5) webhook → Spam and Stuff. Events: Test, Grab, Download (import or upgrade), Rename,
// MovieAdded, MovieDelete, MovieFileDelete, Health, HealthRestored, ApplicationUpdate,
// ManualInteractionRequired; anything else gets a generic message. Shared helpers: lib/prelude.js.
var app = text(data.instanceName, "Radarr");
var movie = obj(data.movie);
var title = text(movie.title, "Unknown movie") + (movie.year ? " (" + movie.year + ")" : "");
var file = obj(data.movieFile);
var base = httpUrl(data.applicationUrl);
var link = base && movie.tmdbId ? base.replace(/\/$/, "") + "/movie/" + movie.tmdbId : base;

if (!arrCommonEvent(app, data, base)) {
  switch (data.eventType) {
    case "Grab":
      post("⬇️", app + ": grabbed " + title, releaseDetails(data.release, data), link);
      break;
    case "Download":
      post(data.isUpgrade ? "⏫" : "✅", app + ": " + (data.isUpgrade ? "upgraded " : "imported ") + title, [
        ["Quality", file.quality],
        ["Size", bytes(file.size)],
        ["File", file.relativePath],
      ], link);
      break;
    case "Rename":
      post("📝", app + ": renamed files of " + title, [], link);
      break;
    case "MovieAdded":
      post("➕", app + ": added " + title, [["Path", movie.folderPath]], link);
      break;
    case "MovieDelete":
      post("🗑️", app + ": deleted " + title, [["Files deleted", data.deletedFiles ? "yes" : "no"]], base);
      break;
    case "MovieFileDelete":
      post("🗑️", app + ": deleted the file of " + title, [["Reason", data.deleteReason], ["File", file.relativePath]], link);
      break;
    case "ManualInteractionRequired":
      post("✋", app + ": manual import needed for " + title, [
        ["Download", obj(data.release).releaseTitle || data.downloadId],
        ["Client", data.downloadClient],
      ], link);
      break;
    default:
      postUnknown(app, data.eventType, data);
  }
}
