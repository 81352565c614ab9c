// The review page: keyboard-first decisions, images hidden until revealed one at a time,
// heatmaps on demand, a heartbeat that keeps the claim, and live refresh of the evidence.
(function () {
  "use strict";
  var root = document.getElementById("case-root");
  if (!root) { return; }
  var form = document.getElementById("decision-form");
  var help = document.getElementById("help");
  var policyCodes = form ? Array.prototype.map.call(form.querySelectorAll("#policy option"), function (o) { return o.value; }) : [];
  var heatmapsShown = false;

  function paintBars() {
    document.querySelectorAll(".bar[data-score]").forEach(function (bar) {
      var score = parseFloat(bar.dataset.score);
      if (!isNaN(score)) { bar.style.width = Math.round(Math.max(0, Math.min(1, score)) * 120) + "px"; }
    });
  }

  function wireImages() {
    document.querySelectorAll("#images button.reveal").forEach(function (button) {
      button.addEventListener("click", function () {
        var img = button.closest("figure").querySelector("img.photo");
        if (img) { img.classList.toggle("concealed"); }
      });
    });
    // a re-upload of a banned image: its image and the banned original are revealed together
    document.querySelectorAll(".known-bad-pair button.reveal").forEach(function (button) {
      button.addEventListener("click", function () {
        button.closest(".known-bad-pair").querySelectorAll("img.photo").forEach(function (img) {
          img.classList.toggle("concealed");
        });
      });
    });
    document.querySelectorAll("img.heatmap").forEach(function (img) { img.hidden = !heatmapsShown; });
  }

  function revealNext() {
    var img = document.querySelector("#images img.photo.concealed");
    if (img) { img.classList.remove("concealed"); }
  }
  function concealAll() {
    document.querySelectorAll("img.photo").forEach(function (img) { img.classList.add("concealed"); });
  }
  function toggleHeatmaps() {
    heatmapsShown = !heatmapsShown;
    document.querySelectorAll("img.heatmap").forEach(function (img) { img.hidden = !heatmapsShown; });
  }

  function choose(value) {
    if (!form) { return; }
    var radio = form.querySelector('input[name="verdict"][value="' + value + '"]');
    if (radio) { radio.checked = true; }
    var action = form.querySelector("#action");
    if (action) {
      if (value === "no_violation") { action.value = "none"; }
      else if (action.value === "none") { action.value = "remove"; }
    }
  }
  function setAction(value) {
    var action = form && form.querySelector("#action");
    if (action && action.querySelector('option[value="' + value + '"]')) {
      action.value = value;
      choose("violation");
    }
  }
  function setPolicy(index) {
    var select = form && form.querySelector("#policy");
    if (select && policyCodes[index]) { select.value = policyCodes[index]; }
  }
  function openReason(id) {
    var details = document.getElementById("more-actions");
    if (details) { details.open = true; }
    var input = document.getElementById(id);
    if (input) { input.focus(); }
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var tag = (target.tagName || "").toLowerCase();
    var typing = tag === "textarea" || (tag === "input" && (target.type === "text" || target.type === "number"));
    if (event.key === "Escape") {
      if (help && !help.hidden) { help.hidden = true; }
      if (typing) { target.blur(); }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var handled = true;
    switch (event.key) {
      case "?": if (help) { help.hidden = !help.hidden; } break;
      case "r": revealNext(); break;
      case "R": concealAll(); break;
      case "h": toggleHeatmaps(); break;
      case "v": choose("violation"); break;
      case "n": choose("no_violation"); break;
      case "a": setAction("remove"); break;
      case "w": setAction("warn"); break;
      case "x": setAction("suspend"); break;
      case "s": openReason("skip-reason"); break;
      case "e": openReason("escalate-reason"); break;
      case "/": if (form) { form.querySelector("#notes").focus(); } break;
      case "Enter": if (form && tag !== "button" && tag !== "a" && tag !== "select") { form.requestSubmit(); } else { handled = false; } break;
      default:
        if (/^[1-9]$/.test(event.key)) { setPolicy(parseInt(event.key, 10) - 1); } else { handled = false; }
    }
    if (handled) { event.preventDefault(); }
  });

  // Keep the claim while the page is open; say so at once when it is gone.
  function csrf() {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  function claimEnded() {
    if (form) {
      form.querySelectorAll("button, input, select, textarea").forEach(function (el) { el.disabled = true; });
    }
    var status = document.getElementById("case-status");
    if (status && !document.getElementById("claim-ended")) {
      var p = document.createElement("p");
      p.id = "claim-ended";
      p.className = "error";
      p.textContent = "Your claim on this case has ended; decisions are no longer accepted here.";
      status.appendChild(p);
    }
  }
  if (root.dataset.holdsClaim === "1") {
    setInterval(function () {
      fetch(root.dataset.heartbeatUrl, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf() } })
        .then(function (r) { if (r.status === 409) { claimEnded(); } });
    }, 60000);
  }

  function refresh(url, id, after) {
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { return null; }
      var holds = r.headers.get("X-Holds-Claim");
      return r.text().then(function (html) { return { html: html, holds: holds }; });
    }).then(function (result) {
      if (!result) { return; }
      var node = document.getElementById(id);
      if (id === "evidence") {
        // keep what the moderator revealed so far
        var revealed = {};
        document.querySelectorAll("#images figure").forEach(function (f) {
          var img = f.querySelector("img.photo");
          revealed[f.dataset.imageId] = img && !img.classList.contains("concealed");
        });
        node.innerHTML = result.html;
        document.querySelectorAll("#images figure").forEach(function (f) {
          var img = f.querySelector("img.photo");
          if (img && revealed[f.dataset.imageId]) { img.classList.remove("concealed"); }
        });
        wireImages();
        paintBars();
      } else {
        node.innerHTML = result.html;
      }
      if (after) { after(result); }
    });
  }

  function refreshEvidence() { refresh(root.dataset.evidenceUrl, "evidence"); }
  function refreshStatus() {
    refresh(root.dataset.statusUrl, "case-status", function (result) {
      if (root.dataset.holdsClaim === "1" && result.holds === "0") { claimEnded(); }
    });
  }

  // After a reconnect the page re-fetches both fragments at once: hints sent while it was
  // disconnected (Redis restarting, a web node going away) reached nobody. A socket that was
  // open starts the backoff afresh.
  function connect(delay, reconnecting) {
    if (!window.WebSocket) { return; }
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(proto + location.host + root.dataset.ws);
    var opened = false;
    socket.onopen = function () {
      opened = true;
      if (reconnecting) { refreshEvidence(); refreshStatus(); }
    };
    socket.onmessage = function (message) {
      var data = {};
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.changed === "enrichment" || data.changed === "verdict") {
        refreshEvidence();
      } else {
        refreshStatus();
      }
    };
    socket.onclose = function () {
      var wait = opened ? 1000 : delay;
      setTimeout(function () { connect(Math.min(wait * 2, 30000), true); }, wait);
    };
  }

  paintBars();
  wireImages();
  connect(1000, false);
})();
