// Seerr (Overseerr / Jellyseerr) webhook with the default JSON template → Spam and Stuff.
// notification_type: MEDIA_PENDING, MEDIA_APPROVED, MEDIA_AUTO_APPROVED, MEDIA_AUTO_REQUESTED,
// MEDIA_AVAILABLE, MEDIA_DECLINED, MEDIA_FAILED, ISSUE_CREATED, ISSUE_COMMENT, ISSUE_RESOLVED,
// ISSUE_REOPENED, TEST_NOTIFICATION. IDs are strings; media, request, issue and comment may be null.
// Shared helpers: lib/prelude.js.
var KINDS = {
  MEDIA_PENDING: ["🙋", "New request"],
  MEDIA_AUTO_REQUESTED: ["🙋", "Automatic request"],
  MEDIA_APPROVED: ["👍", "Request approved"],
  MEDIA_AUTO_APPROVED: ["👍", "Request automatically approved"],
  MEDIA_AVAILABLE: ["🍿", "Now available"],
  MEDIA_DECLINED: ["👎", "Request declined"],
  MEDIA_FAILED: ["❌", "Request failed"],
  ISSUE_CREATED: ["🐞", "Issue reported"],
  ISSUE_COMMENT: ["💬", "Issue comment"],
  ISSUE_RESOLVED: ["✅", "Issue resolved"],
  ISSUE_REOPENED: ["🔁", "Issue reopened"],
  TEST_NOTIFICATION: ["🧪", "Seerr test notification"],
};
var kind = KINDS[data.notification_type];
var media = obj(data.media);
var request = obj(data.request);
var issue = obj(data.issue);
var comment = obj(data.comment);
var message = text(data.message);
if (message.length > 300) message = message.slice(0, 300) + "…";

if (!kind) {
  postUnknown("Seerr", text(data.event, data.notification_type), data);
} else {
  var subject = text(data.subject);
  post(kind[0], kind[1] + (subject && data.notification_type !== "TEST_NOTIFICATION" ? ": " + subject : ""), [
    ["Type", media.media_type],
    ["Requested by", request.requestedBy_username],
    ["Issue", [text(issue.issue_type), text(issue.issue_status)].filter(Boolean).join(", ")],
    ["Reported by", issue.reportedBy_username],
    ["Comment", comment.comment_message],
    ["By", comment.commentedBy_username],
    message,
  ]);
}
