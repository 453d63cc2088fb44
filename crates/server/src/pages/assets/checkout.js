// Follows the payment on its hosted page: asks for its state every two seconds and reloads the
// page once it changed (the page then shows the outcome or goes back to the shop). Without
// JavaScript the page refreshes itself instead.
(function () {
  "use strict";
  var main = document.querySelector("main[data-status]");
  if (!main) { return; }
  var statusUrl = main.getAttribute("data-status");
  var shown = main.getAttribute("data-state");
  function ask() {
    fetch(statusUrl, { cache: "no-store", credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && s.state !== shown) { window.location.replace(window.location.href); return; }
        window.setTimeout(ask, 2000);
      })
      .catch(function () { window.setTimeout(ask, 4000); });
  }
  window.setTimeout(ask, 2000);
})();
