// The queue page listens for "changed" events and re-fetches its table fragment.
(function () {
  "use strict";
  var root = document.getElementById("queues");
  if (!root || !window.WebSocket) { return; }
  var pending = null;
  function refresh() {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(root.dataset.fragment, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) { if (html !== null) { root.innerHTML = html; } });
    }, 150);
  }
  function connect(delay) {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(proto + location.host + root.dataset.ws);
    socket.onmessage = refresh;
    socket.onclose = function () { setTimeout(function () { connect(Math.min(delay * 2, 30000)); }, delay); };
  }
  connect(1000);
})();
