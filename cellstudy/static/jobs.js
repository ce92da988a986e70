// The job page polls its status (issue 5): no inline script, CSP script-src 'self'.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url");
  var delay = 1000;

  function show(state) {
    document.getElementById("job-status").textContent = state.status;
    document.getElementById("job-count").textContent =
      state.total ? "(" + state.done + " of " + state.total + ")" : "";
    var bar = document.getElementById("job-progress");
    bar.value = state.percent;
    bar.textContent = state.percent + " %";
    var error = document.getElementById("job-error");
    error.textContent = state.error || "";
    error.hidden = !state.error;
    if (state.download) {
      var link = document.getElementById("job-download-link");
      link.href = state.download;
      link.textContent = "Download " + (state.name || "the result");
      document.getElementById("job-download").hidden = false;
    }
    var finished = state.status === "done" || state.status === "failed";
    document.getElementById("job-wait").hidden = finished;
    return finished;
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (state) {
        if (!show(state)) {
          delay = Math.min(delay * 1.2, 5000);
          window.setTimeout(poll, delay);
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  var initial = box.getAttribute("data-status");
  if (initial !== "done" && initial !== "failed") { window.setTimeout(poll, delay); }
}());
