// Enter sends the message, Shift+Enter adds a new line. This is the only hand-written
// script: an htmx key filter (hx-trigger="keydown[...]") would need eval, i.e. a CSP with
// 'unsafe-eval'. requestSubmit() goes through the form's normal submit, so htmx (or the
// plain form without htmx) handles it exactly like a click on Send.
document.addEventListener("keydown", function (event) {
  var box = event.target;
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  if (!(box instanceof HTMLTextAreaElement) || !box.hasAttribute("data-enter-sends")) return;
  event.preventDefault();
  if (box.value.trim() !== "" && box.form) box.form.requestSubmit();
});
