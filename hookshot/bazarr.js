// Bazarr through Apprise's json:// notifier → Spam and Stuff: { version, title, message, attachments, type }
// with type info, success, warning or failure (Python json.dumps: non-ASCII arrives as \uXXXX escapes,
// which JSON.parse restores). Shared helpers: lib/prelude.js.
var EMOJI = { success: "✅", warning: "⚠️", failure: "❌", info: "💬" };
var title = text(data.title, "Bazarr");
var message = text(data.message);

if (!message && !data.title) {
  postUnknown("Bazarr", "", data);
} else {
  post(EMOJI[text(data.type)] || "💬", title === "Bazarr notification" ? "Bazarr" : title, [message]);
}
