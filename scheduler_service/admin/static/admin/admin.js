// The admin's only script: a live preview of the schedule on the task form.
// Every page works without it; it only saves a round trip to see when a task will run.
(function () {
  "use strict";

  function setUpPreview(box) {
    var form = box.closest("form");
    // The fields that make the schedule; the server reads them as the API would.
    var inputs = ["cron_expression", "timezone", "interval_seconds", "run_at", "calendar"]
      .map(function (name) { return form.querySelector("#" + name); })
      .filter(function (input) { return input !== null; });
    var timer = null;
    var latest = 0;

    function show(nodes) {
      box.replaceChildren.apply(box, nodes);
    }

    function text(tag, content, className) {
      var node = document.createElement(tag);
      node.textContent = content;
      if (className) node.className = className;
      return node;
    }

    function refresh() {
      var asked = ++latest;
      var query = new URLSearchParams();
      inputs.forEach(function (input) { query.set(input.name, input.value.trim()); });
      fetch(box.dataset.url + "?" + query.toString(), { headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (asked !== latest) return; // a newer request is on its way
          if (answer.error) {
            show([text("span", answer.error, "preview-error")]);
            return;
          }
          if (answer.next_runs.length === 0) {
            show([text("span", "No schedule of its own: the task runs after its parents succeed.", "muted")]);
            return;
          }
          var list = document.createElement("ol");
          answer.next_runs.forEach(function (moment) {
            list.appendChild(text("li", moment.replace("T", " ").replace("+00:00", " UTC")));
          });
          show([text("strong", answer.description), text("span", " — next runs:", "muted"), list]);
        })
        .catch(function () { /* the preview is a nicety; the form still validates on save */ });
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    }

    inputs.forEach(function (input) {
      input.addEventListener("input", later);
      input.addEventListener("change", later);
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("schedule-preview");
    if (box) setUpPreview(box);
  });
})();
