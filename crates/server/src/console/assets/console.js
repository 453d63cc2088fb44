// The console's only script: a transaction's timeline follows the transaction while its page
// is open (server-sent events), so a terminal at work is seen without reloading. Without
// JavaScript the page shows the timeline as it was when loaded.
(function () {
  "use strict";
  var table = document.querySelector("table[data-live]");
  if (!table || !window.EventSource) { return; }
  var body = table.querySelector("tbody");
  var state = document.querySelector("[data-live-state]");
  var source = new EventSource(table.getAttribute("data-live"));
  source.addEventListener("timeline", function (message) {
    var e = JSON.parse(message.data);
    var row = document.createElement("tr");
    [e.at, e.kind, e.detail].forEach(function (text, i) {
      var cell = document.createElement("td");
      if (i === 2) { cell.className = "wrap"; }
      cell.textContent = text;
      row.appendChild(cell);
    });
    row.className = "fresh";
    body.appendChild(row);
    if (state) {
      state.textContent = e.state;
      state.className = "state " + e.state;
    }
  });
})();
