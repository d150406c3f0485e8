// Readarr webhook → Spam and Stuff. Events: Test, Grab, Download (release import or upgrade), Rename,
// Retag, AuthorAdded, AuthorDelete, BookDelete, BookFileDelete, Health, HealthRestored, ApplicationUpdate,
// ManualInteractionRequired; anything else gets a generic message. Readarr sends no applicationUrl, so
// messages link only to the wiki for health checks. Shared helpers: lib/prelude.js.
var app = text(data.instanceName, "Readarr");
var author = obj(data.author);
var name = text(author.name, "Unknown author");
var books = list(data.books)
  .concat(data.book ? [data.book] : [])
  .map(function (b) {
    return text(obj(b).title);
  })
  .filter(Boolean)
  .join(", ");
var deleted = ["Files deleted", data.deletedFiles ? "yes" : "no"];

if (!arrCommonEvent(app, data, "")) {
  switch (data.eventType) {
    case "Grab":
      post("⬇️", app + ": grabbed " + name, [["Books", books]].concat(releaseDetails(data.release, data)));
      break;
    case "Download":
      post(data.isUpgrade ? "⏫" : "✅", app + ": " + (data.isUpgrade ? "upgraded " : "imported ") + name, [
        ["Books", books],
        ["Files", list(data.bookFiles).length || ""],
      ]);
      break;
    case "Rename":
      post("📝", app + ": renamed files of " + name, []);
      break;
    case "Retag":
      post("🏷️", app + ": retagged files of " + name, [["Books", books]]);
      break;
    case "AuthorAdded":
      post("➕", app + ": added " + name, [["Path", author.path]]);
      break;
    case "AuthorDelete":
      post("🗑️", app + ": deleted " + name, [deleted]);
      break;
    case "BookDelete":
      post("🗑️", app + ": deleted a book of " + name, [["Books", books], deleted]);
      break;
    case "BookFileDelete":
      post("🗑️", app + ": deleted a book file of " + name, [["Books", books], ["Reason", data.deleteReason]]);
      break;
    case "ManualInteractionRequired":
      post("✋", app + ": manual import needed for " + name, [["Books", books], ["Client", data.downloadClient]]);
      break;
    default:
      postUnknown(app, data.eventType, data);
  }
}
