// Uptime Kuma webhook (application/json) → Spam and Stuff: { heartbeat, monitor, msg }.
// heartbeat.status: 0 down, 1 up, 2 pending, 3 maintenance; ping is absent on DOWN heartbeats;
// the "Test" button sends heartbeat and monitor as null. Shared helpers: lib/prelude.js.
var beat = data.heartbeat ? obj(data.heartbeat) : null;
var monitor = data.monitor ? obj(data.monitor) : null;
var STATES = { 0: ["🔴", "down"], 1: ["✅", "up"], 2: ["🟡", "pending"], 3: ["🔧", "in maintenance"] };

if (!beat && !monitor) {
  post("🧪", "Uptime Kuma: " + text(data.msg, "test notification"), ["Monitor alerts reach this room."]);
} else {
  var state = STATES[beat ? beat.status : -1] || ["ℹ️", "status changed"];
  var name = text(monitor && monitor.name, "monitor");
  var target = monitor ? httpUrl(monitor.url) || text(monitor.hostname) : "";
  post(state[0], name + " is " + state[1], [
    ["Message", beat && beat.msg],
    ["Ping", beat && typeof beat.ping === "number" ? beat.ping + " ms" : ""],
    ["Target", target],
    ["Time", beat && beat.time],
  ], monitor && monitor.url, beat && beat.status === 0 ? "m.text" : "m.notice");
}
