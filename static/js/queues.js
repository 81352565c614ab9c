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
  // After a reconnect the page re-fetches at once: hints sent while it was disconnected (Redis
  // restarting, a web node going away) reached nobody. A socket that was open starts the
  // backoff afresh.
  function connect(delay, reconnecting) {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(proto + location.host + root.dataset.ws);
    var opened = false;
    socket.onopen = function () { opened = true; if (reconnecting) { refresh(); } };
    socket.onmessage = refresh;
    socket.onclose = function () {
      var wait = opened ? 1000 : delay;
      setTimeout(function () { connect(Math.min(wait * 2, 30000), true); }, wait);
    };
  }
  connect(1000, false);
})();
