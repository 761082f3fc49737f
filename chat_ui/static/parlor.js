// Parlor's one hand-written script: small enhancements over pages that work without it.
// The CSP allows no inline script and no eval, so everything is wired here with
// addEventListener (an htmx key filter such as hx-trigger="keydown[...]" would need eval).
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");

  function $(selector, within) { return (within || document).querySelector(selector); }
  function $$(selector, within) { return (within || document).querySelectorAll(selector); }
  function composer() { return $("#composer-input"); }
  function answering() { return $('#messages [aria-busy="true"]') !== null; }

  // --- Enter sends, Shift+Enter adds a line (on touch keyboards Enter stays a new line).
  // requestSubmit() goes through the form's normal submit, so htmx (or the plain form)
  // handles it exactly like a click on Send.
  var touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (event.key === "Escape") {
      // Escape in a question being edited cancels the edit (as its Cancel link does).
      var editing = box instanceof Element && box.closest(".msg-editing");
      var cancel = editing && $(".cancel-edit", editing);
      if (cancel) { event.preventDefault(); cancel.click(); return; }
      var drawer = $("#drawer");
      if (drawer && drawer.checked) { drawer.checked = false; drawer.focus(); }
      return;
    }
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || touch) return;
    if (!(box instanceof HTMLTextAreaElement) || !box.hasAttribute("data-enter-sends")) return;
    event.preventDefault();
    var send = box.form && $("#send", box.form);
    // A slash command (chat_ui/commands.py) is answered by Parlor, not the model: it may
    // be sent while an answer is written.
    var command = /^\/[A-Za-z_]+(\s|$)/.test(box.value);
    if (send && send.disabled && !command) return;
    if (box.value.trim() !== "" && box.form) box.form.requestSubmit();
  });

  // --- Send waits while an answer is being written (Stop is on the answer).
  function updateSend() {
    var send = $("#send");
    if (!send) return;
    var busy = answering();
    send.disabled = busy;
    if (busy) send.title = "Wait for the answer to finish, or stop it";
    else send.removeAttribute("title");
  }

  // --- Copy buttons: a whole message, or one code block.
  function enhance(within) {
    $$(".copy-message[hidden]", within).forEach(function (b) { b.hidden = false; });
    $$(".code-head", within).forEach(function (head) {
      if ($(".copy", head)) return;
      var lang = $(".code-lang", head);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy copy-code";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this " + (lang ? lang.textContent + " " : "") + "code");
      head.appendChild(button);
    });
  }
  function copied(button) {
    var label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("copied");
    window.setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
  }
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element && event.target.closest(".copy");
    if (!button || !navigator.clipboard) return;
    var text = "";
    if (button.classList.contains("copy-code")) {
      var code = $("pre", button.closest(".code-block"));
      text = code ? code.textContent : "";
    } else {
      var body = $(".msg-body", button.closest(".msg"));
      text = body ? body.innerText : "";
    }
    navigator.clipboard.writeText(text.replace(/\n$/, "")).then(function () { copied(button); });
  });

  // --- Theme: light, dark or the system's, kept in a cookie (the form posts it without JS).
  function setCookie(name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=34560000; samesite=lax";
  }
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!(input instanceof HTMLInputElement) || input.name !== "theme" || !input.closest("#theme-form")) return;
    setCookie("theme", input.value);
    if (input.value === "system") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", input.value);
    var meta = $('meta[name="color-scheme"]');
    if (meta) meta.content = input.value === "system" ? "light dark" : input.value;
  });
  // The time zone, so that the sidebar's "Today" and "Yesterday" are the person's.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("tz=" + encodeURIComponent(zone)) === -1) setCookie("tz", zone);
  } catch (e) { /* no Intl: UTC it is */ }

  // --- Jump to latest: shown when the person has scrolled up while an answer is written.
  function updateJump() {
    var scroller = $("#scroller"), jump = $("#jump-latest");
    if (!scroller || !jump) return;
    // The scroller is column-reverse: 0 at the bottom, negative above it.
    jump.hidden = !(Math.abs(scroller.scrollTop) > 80 && answering());
  }
  document.addEventListener("click", function (event) {
    if (!(event.target instanceof Element) || !event.target.closest("#jump-latest")) return;
    var scroller = $("#scroller");
    if (scroller) scroller.scrollTop = 0;
    updateJump();
    var box = composer();
    if (box) box.focus({ preventScroll: true });
  });

  // --- Focus: when a swap removes the focused element (Stop, or the end of the answer
  // while its Stop button had focus), continue in the message box.
  var lostFocus = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    lostFocus = !!(target && target.contains(document.activeElement));
  });
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var msg = event.target instanceof Element && event.target.closest(".msg");
    if (msg && msg.contains(document.activeElement) && event.detail && event.detail.type === "done") {
      lostFocus = true;
    }
  });
  document.addEventListener("htmx:afterSettle", function () {
    updateSend();
    updateJump();
    if (lostFocus && (!document.activeElement || document.activeElement === document.body)) {
      var box = composer();
      if (box) box.focus({ preventScroll: true });
    }
    lostFocus = false;
  });
  // New content (a sent message, a streamed block, a finished answer) gets its buttons as
  // it is inserted, before it is painted: the end of an answer changes nothing visible.
  function added(records) {
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (!(node instanceof Element)) return;
        enhance(node);
        if (!touch) $$(".composer-hint[hidden]", node).forEach(function (p) { p.hidden = false; });
      });
    });
  }
  document.addEventListener("htmx:sseMessage", updateJump);

  // --- Version switcher: the branch is redrawn, so focus would fall to the message box;
  // keep it on the switcher of the message at the same place (the other arrow once this
  // one has reached the end), so that it can be pressed again from the keyboard.
  var switching = null;
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element && event.target.closest(".versions button");
    var msg = button && button.closest("#messages > .msg");
    if (!msg) return;
    switching = {
      index: Array.prototype.indexOf.call(msg.parentNode.children, msg),
      next: button.classList.contains("version-next")
    };
  });
  document.addEventListener("htmx:afterSettle", function () {
    var was = switching, messages = $("#messages");
    switching = null;
    var msg = was && messages && messages.children[was.index];
    if (!msg) return;
    var mine = $(was.next ? ".version-next" : ".version-prev", msg);
    var other = $(was.next ? ".version-prev" : ".version-next", msg);
    var target = mine && !mine.disabled ? mine : other;
    if (target && !target.disabled) target.focus({ preventScroll: true });
  });

  function start() {
    enhance(document);
    new MutationObserver(added).observe(document.body, { childList: true, subtree: true });
    if (!touch) $$(".composer-hint[hidden]").forEach(function (p) { p.hidden = false; });
    updateSend();
    var scroller = $("#scroller");
    if (scroller) scroller.addEventListener("scroll", updateJump, { passive: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
