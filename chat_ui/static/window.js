// Long chats: a page showing a window that ends before the newest message (opened at a
// message far back) has the newest messages elsewhere, so a message sent from it opens
// the chat's latest window (where the answer streams) instead of being appended after
// the gap. The loading of earlier messages itself needs no script (htmx attributes).
(function () {
  "use strict";
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail && event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "composer") return;
    if (!event.detail.successful || !document.getElementById("window-later")) return;
    var chat = document.getElementById("chat");
    var id = chat && chat.getAttribute("data-chat-id");
    if (id) window.location.assign("/chats/" + encodeURIComponent(id));
  });
})();
