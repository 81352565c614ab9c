// The label-only page, keyboard first: v violation, n no violation, u unsure, Enter submit and
// next, s skip, ? help; images stay concealed until revealed (r next, Shift+r all hidden again).
(function () {
  "use strict";
  var root = document.getElementById("labeling-root");
  if (!root) { return; }
  var form = document.getElementById("labeling-form");
  var skip = document.getElementById("labeling-skip-form");
  var help = document.getElementById("help");

  document.querySelectorAll("#images button.reveal").forEach(function (button) {
    button.addEventListener("click", function () {
      var img = button.closest("figure").querySelector("img.photo");
      if (img) { img.classList.toggle("concealed"); }
    });
  });
  function revealNext() {
    var img = document.querySelector("#images img.photo.concealed");
    if (img) { img.classList.remove("concealed"); }
  }
  function concealAll() {
    document.querySelectorAll("#images img.photo").forEach(function (img) { img.classList.add("concealed"); });
  }
  function choose(value) {
    var radio = form && form.querySelector('input[name="answer"][value="' + value + '"]');
    if (radio) { radio.checked = true; }
  }
  function chosen() {
    return form && form.querySelector('input[name="answer"]:checked');
  }

  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (event.key === "Escape") {
      if (help) { help.hidden = true; }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var handled = true;
    switch (event.key) {
      case "?": if (help) { help.hidden = !help.hidden; } break;
      case "r": revealNext(); break;
      case "R": concealAll(); break;
      case "v": choose("violation"); break;
      case "n": choose("no_violation"); break;
      case "u": choose("unsure"); break;
      case "s": if (skip) { skip.requestSubmit(); } break;
      case "Enter":
        if (form && chosen() && tag !== "button" && tag !== "a") { form.requestSubmit(); } else { handled = false; }
        break;
      default: handled = false;
    }
    if (handled) { event.preventDefault(); }
  });
})();
