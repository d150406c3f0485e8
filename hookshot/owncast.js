// Owncast webhook → Spam and Stuff: { type, eventData }. STREAM_STARTED and STREAM_STOPPED post the stream
// name, title and summary (a fresh install has default names); other event types (chat, joins, name
// changes) get a short generic line. Shared helpers: lib/prelude.js.
var ev = obj(data.eventData);
var name = text(ev.name, "Owncast");
var url = httpUrl(ev.serverURL) || httpUrl(ev.serverUrl);

switch (data.type) {
  case "STREAM_STARTED":
    post("🔴", name + " is live: " + text(ev.streamTitle, "stream started"), [text(ev.summary)], url, "m.text");
    break;
  case "STREAM_STOPPED":
    post("⏹️", name + " stream ended", [["Title", ev.streamTitle]], url);
    break;
  default:
    postUnknown(name, data.type, data);
}
