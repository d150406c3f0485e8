// Lidarr (v2) webhook → Spam and Stuff. Events: Test, Grab, Download (release import or upgrade), Rename,
// Retag, ArtistAdd, ArtistDelete, AlbumDelete, Health, HealthRestored, ApplicationUpdate,
// ManualInteractionRequired; anything else gets a generic message. Shared helpers: lib/prelude.js.
var app = text(data.instanceName, "Lidarr");
var artist = obj(data.artist);
var name = text(artist.name, "Unknown artist");
var albums = list(data.albums)
  .concat(data.album ? [data.album] : [])
  .map(function (a) {
    return text(obj(a).title);
  })
  .filter(Boolean)
  .join(", ");
var base = httpUrl(data.applicationUrl);
var link = base && artist.mbId ? base.replace(/\/$/, "") + "/artist/" + artist.mbId : base;
var deleted = ["Files deleted", data.deletedFiles ? "yes" : "no"];

if (!arrCommonEvent(app, data, base)) {
  switch (data.eventType) {
    case "Grab":
      post("⬇️", app + ": grabbed " + name, [["Albums", albums]].concat(releaseDetails(data.release, data)), link);
      break;
    case "Download":
      post(data.isUpgrade ? "⏫" : "✅", app + ": " + (data.isUpgrade ? "upgraded " : "imported ") + name, [
        ["Albums", albums],
        ["Tracks", list(data.trackFiles).length || ""],
      ], link);
      break;
    case "Rename":
      post("📝", app + ": renamed files of " + name, [], link);
      break;
    case "Retag":
      post("🏷️", app + ": retagged files of " + name, [["Albums", albums]], link);
      break;
    case "ArtistAdd":
    case "ArtistAdded":
      post("➕", app + ": added " + name, [["Path", artist.path]], link);
      break;
    case "ArtistDelete":
      post("🗑️", app + ": deleted " + name, [deleted], base);
      break;
    case "AlbumDelete":
      post("🗑️", app + ": deleted an album of " + name, [["Albums", albums], deleted], link);
      break;
    case "ManualInteractionRequired":
      post("✋", app + ": manual import needed for " + name, [["Albums", albums], ["Client", data.downloadClient]], link);
      break;
    default:
      postUnknown(app, data.eventType, data);
  }
}
