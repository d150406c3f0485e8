// deploy-agent → Spam and Stuff: the JSON events every agent sends to its `webhook` notify target
// (schema deploy-agent/event@1: event, host, revision, subject, step, error {code, message, hint}, notes,
// durationMs, url, repeats). One readable line per event, details below. Shared helpers: lib/prelude.js.
var host = text(data.host, "a host");
var rev = text(data.revision).slice(0, 12);
var commit = rev ? rev + (text(data.subject) ? " “" + text(data.subject) + "”" : "") : "";
var err = obj(data.error);
var problem = text(err.code) ? text(err.code) + ": " + text(err.message) : text(err.message);
var seconds = typeof data.durationMs === "number" ? (data.durationMs / 1000).toFixed(1) + " s" : "";
var notes = list(data.notes)
  .map(function (n) {
    return text(n);
  })
  .filter(function (n) {
    return n !== "";
  });
var again = typeof data.repeats === "number" && data.repeats > 0 ? "again (" + (data.repeats + 1) + "×)" : "";

switch (data.event) {
  case "run.succeeded":
    post("✅", host + " deployed " + (rev || "the newest commit"), [["Commit", commit], ["Took", seconds], ["Notes", notes.join("\n")]], data.url);
    break;
  case "run.failed":
    post(
      "❌",
      host + ": " + text(data.step, "a step") + " failed" + (again ? " " + again : ""),
      [["Commit", commit], ["Error", problem], ["Hint", err.hint], ["Took", seconds]],
      data.url,
      "m.text",
    );
    break;
  case "run.error":
    post(
      "⚠️",
      host + " could not deploy" + (again ? " " + again : ""),
      [["Commit", commit], ["Error", problem], ["Hint", err.hint]],
      data.url,
      "m.text",
    );
    break;
  case "run.started":
    post("⏳", host + " deploying " + (rev || "the newest commit"), [["Commit", commit]], data.url);
    break;
  case "step.rolled-back":
    post("↩️", host + ": " + text(data.step, "a step") + " rolled back", [["Commit", commit], ["Why", problem]], data.url, "m.text");
    break;
  case "job.done":
    post("🔁", host + ": " + (notes[0] || text(data.step, "a job") + " done"), [], data.url);
    break;
  case "drift.detected":
    post("🧭", host + ": " + text(data.step, "a step") + " differs from git", [["See", "deploy-agent diff on " + host]], data.url, "m.text");
    break;
  case "clone.reset-failed":
    post("⚠️", host + ": its clone could not be reset to the deployed commit", [["Commit", commit], ["Error", problem], ["Repair", err.hint]], data.url, "m.text");
    break;
  default:
    postUnknown("deploy-agent", data.event, data);
}
