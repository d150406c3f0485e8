// Tinker-Tickets (the guild's own ticket tracker) → Spam and Stuff. Its webhook body, defined here:
//   {
//     "event":   "ticket.created" | "ticket.updated" | "ticket.commented" | "ticket.assigned"
//                | "ticket.closed" | "ticket.reopened" | "test",
//     "ticket":  { "id": 42, "title": "...", "status": "open", "priority": "low|normal|high|urgent",
//                  "url": "https://...", "assignee": "name or null", "tags": ["..."] },
//     "actor":   { "name": "who did it" },
//     "comment": { "body": "..." }          (ticket.commented only)
//     "changes": { "<field>": { "from": x, "to": y } }   (ticket.updated only)
//   }
// Unknown events get a generic line. Shared helpers: lib/prelude.js.
var ticket = obj(data.ticket);
var actor = text(obj(data.actor).name);
var label = "#" + text(ticket.id, "?") + " " + text(ticket.title, "untitled ticket");
var urgent = ticket.priority === "urgent" || ticket.priority === "high";
var EVENTS = {
  "ticket.created": [urgent ? "🚨" : "🎫", "New ticket"],
  "ticket.updated": ["✏️", "Ticket updated"],
  "ticket.commented": ["💬", "New comment on"],
  "ticket.assigned": ["👤", "Ticket assigned"],
  "ticket.closed": ["✅", "Ticket closed"],
  "ticket.reopened": ["🔁", "Ticket reopened"],
};
var kind = EVENTS[data.event];
var changes = Object.keys(obj(data.changes))
  .map(function (k) {
    var c = obj(data.changes[k]);
    return k + ": " + text(c.from, "–") + " → " + text(c.to, "–");
  })
  .join("; ");
var comment = text(obj(data.comment).body);
if (comment.length > 500) comment = comment.slice(0, 500) + "…";

if (data.event === "test") {
  post("🧪", "Tinker-Tickets test notification", ["Ticket events reach this room."]);
} else if (!kind) {
  postUnknown("Tinker-Tickets", data.event, data);
} else {
  post(kind[0], kind[1] + ": " + label, [
    ["By", actor],
    ["Status", ticket.status],
    ["Priority", ticket.priority],
    ["Assignee", ticket.assignee],
    ["Changes", changes],
    comment,
  ], ticket.url, urgent && data.event === "ticket.created" ? "m.text" : "m.notice");
}
