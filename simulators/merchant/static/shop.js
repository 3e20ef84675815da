// The order page reloads itself when the order changed (a callback, a
// refund's answer); if the tester is typing into a form it says so instead.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-poll");
  if (!url) { return; }
  var revision = body.getAttribute("data-revision");
  var dirty = false;
  document.addEventListener("input", function () { dirty = true; });
  function poll() {
    if (document.hidden) { return; }
    fetch(url, {headers: {"Accept": "application/json"}, cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) {
        if (!state || String(state.revision) === revision) { return; }
        if (dirty) {
          var notice = document.getElementById("changed");
          if (notice) { notice.hidden = false; }
        } else {
          window.location.reload();
        }
      })
      .catch(function () { /* the shop is restarting: try again later */ });
  }
  window.setInterval(poll, 2000);
})();
