// The review page: images stay blurred until revealed one at a time; keyboard shortcuts.
(function () {
  "use strict";
  document.querySelectorAll(".bar[data-score]").forEach(function (bar) {
    var score = parseFloat(bar.dataset.score);
    if (!isNaN(score)) { bar.style.width = Math.round(Math.max(0, Math.min(1, score)) * 120) + "px"; }
  });
  function revealNext() {
    var img = document.querySelector(".image img.blurred");
    if (img) { img.classList.remove("blurred"); }
  }
  document.querySelectorAll("button.reveal").forEach(function (button) {
    button.addEventListener("click", function () {
      var img = button.closest("figure").querySelector("img");
      if (img) { img.classList.toggle("blurred"); }
    });
  });
  var form = document.getElementById("decision-form");
  function choose(value) {
    if (!form) { return; }
    var radio = form.querySelector('input[name="verdict"][value="' + value + '"]');
    if (radio) { radio.checked = true; }
    var action = form.querySelector("#action");
    if (action) { action.value = value === "no_violation" ? "none" : (action.value === "none" ? "remove" : action.value); }
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "textarea" || tag === "input" && event.target.type === "text") { return; }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "r") { revealNext(); event.preventDefault(); }
    else if (event.key === "v") { choose("violation"); event.preventDefault(); }
    else if (event.key === "n") { choose("no_violation"); event.preventDefault(); }
    else if (event.key === "Enter" && form && tag !== "button") { form.requestSubmit(); event.preventDefault(); }
  });
})();
