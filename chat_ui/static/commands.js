// Slash command suggestions: the list comes from the server (htmx, /commands/suggest);
// this makes it usable from the keyboard. Tab in the message box takes the first
// suggestion; ArrowDown (or ArrowUp) goes into the list, where the arrows move and Enter
// takes one; Escape closes it.
(function () {
  "use strict";
  function box() { return document.getElementById("composer-input"); }
  function options() {
    var list = document.getElementById("command-suggestions");
    return list ? Array.prototype.slice.call(list.querySelectorAll(".command-suggestion")) : [];
  }
  function close() {
    var list = document.getElementById("command-suggestions");
    if (list) list.innerHTML = "";
  }
  function take(button) {
    var input = box();
    if (!input) return;
    input.value = button.getAttribute("data-fill") || "";
    close();
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    // As if typed: after "/model " the list offers the models (htmx listens for input).
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element && event.target.closest(".command-suggestion");
    if (button) take(button);
  });
  document.addEventListener("keydown", function (event) {
    var found = options();
    if (!found.length) return;
    var input = box();
    var at = found.indexOf(document.activeElement);
    if (event.key === "Escape") {
      close();
      if (input) input.focus();
      event.preventDefault();
    } else if (event.target === input && (event.key === "Tab" && !event.shiftKey)) {
      event.preventDefault();
      take(found[0]);
    } else if (event.target === input && event.key === "ArrowDown") {
      event.preventDefault();
      found[0].focus();
    } else if (event.target === input && event.key === "ArrowUp") {
      // The list is drawn above the box: Up reaches its nearest (last) line.
      event.preventDefault();
      found[found.length - 1].focus();
    } else if (at >= 0 && event.key === "ArrowDown") {
      event.preventDefault();
      if (at === found.length - 1 && input) input.focus();
      else found[at + 1].focus();
    } else if (at >= 0 && event.key === "ArrowUp") {
      event.preventDefault();
      if (at > 0) found[at - 1].focus();
    }
  });
})();
