// The appeal page, keyboard first: u uphold, o overturn, n write the answer, Ctrl+Enter decide;
// images stay concealed until revealed, as on the review page.
(function () {
  "use strict";
  var root = document.getElementById("appeal-root");
  if (!root) { return; }
  var form = document.getElementById("appeal-form");
  document.querySelectorAll("#images button.reveal").forEach(function (button) {
    button.addEventListener("click", function () {
      var img = button.closest("figure").querySelector("img.photo");
      if (img) { img.classList.toggle("concealed"); }
    });
  });
  document.querySelectorAll("img.heatmap").forEach(function (img) { img.hidden = true; });
  if (!form) { return; }
  var notes = document.getElementById("appeal-notes");
  document.addEventListener("keydown", function (event) {
    var typing = event.target === notes;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (typing || event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "u") { document.getElementById("outcome-uphold").checked = true; }
    else if (event.key === "o") { document.getElementById("outcome-overturn").checked = true; }
    else if (event.key === "n") { event.preventDefault(); notes.focus(); }
  });
})();
