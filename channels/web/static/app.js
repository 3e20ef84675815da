// Progressive conveniences only: every page works without this file.
(function () {
  "use strict";
  // another CAPTCHA picture without reloading the login page
  document.querySelectorAll("[data-captcha-refresh]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      fetch("/api/v1/captcha", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (c) {
          var picture = document.querySelector("[data-captcha]");
          picture.replaceChildren(new DOMParser().parseFromString(c.svg, "image/svg+xml").documentElement);
          document.querySelector("[data-captcha-id]").value = c.captcha_id;
        })
        .catch(function () { window.location.reload(); });
    });
  });
  // copy the one-time initial password shown to the admin
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    if (!navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = document.getElementById(button.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
    });
  });
})();
