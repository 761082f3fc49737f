// Search: Ctrl+K (Cmd+K on a Mac) focuses the search box from anywhere; Escape in it
// closes the results panel. A page opened at a message (`#msg-<id>`, from a search
// result) brings that message into view once the page has settled; CSS (:target)
// highlights it. No inline script anywhere: the CSP allows only files from this origin.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === "k" || event.key === "K")) {
      var box = document.getElementById("search-input");
      if (!box) return;
      event.preventDefault();
      box.focus();
      box.select();
    } else if (event.key === "Escape" && event.target && event.target.id === "search-input") {
      var panel = document.getElementById("search-results");
      if (panel) panel.replaceChildren();
    }
  });

  function revealTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (id.indexOf("msg-") !== 0) return;
    var target = document.getElementById(id);
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    target.classList.add("search-target");
  }
  // After the other scripts' own scrolling (to the newest message) on load.
  window.addEventListener("load", function () { window.setTimeout(revealTarget, 0); });
  window.addEventListener("hashchange", revealTarget);
})();
