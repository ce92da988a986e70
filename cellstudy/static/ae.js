// CTCAE term picker (issue 4): search as you type, keyboard friendly; the grade list
// follows the picked term, with each grade's CTCAE definition. No inline script (CSP).
(function () {
  "use strict";
  var input = document.getElementById("term");
  if (!input) { return; }
  var list = document.getElementById("term-options");
  var grade = document.getElementById("grade");
  var defs = document.getElementById("grade-definitions");
  var soc = document.getElementById("term-soc");
  var active = -1, items = [], timer = null, seq = 0;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined) { node.textContent = text; }
    if (cls) { node.className = cls; }
    return node;
  }
  function close() { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; }
  function highlight(i) {
    var options = list.querySelectorAll("li");
    options.forEach(function (o, k) { o.setAttribute("aria-selected", k === i ? "true" : "false"); });
    active = i;
    if (options[i]) { options[i].scrollIntoView({block: "nearest"}); input.setAttribute("aria-activedescendant", options[i].id); }
  }
  function render(hits) {
    items = hits;
    list.innerHTML = "";
    hits.forEach(function (h, i) {
      var li = el("li");
      li.id = "term-option-" + i;
      li.setAttribute("role", "option");
      li.appendChild(el("span", h.term, "opt-term"));
      li.appendChild(el("small", " " + h.soc + " · " + h.meddra_code, "opt-soc"));
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(i); });
      list.appendChild(li);
    });
    if (!hits.length) { list.appendChild(el("li", "No CTCAE v5.0 term matches.", "none")); }
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    active = -1;
  }
  function search() {
    var q = input.value.trim();
    if (!q) { close(); return; }
    var mine = ++seq;
    fetch(input.dataset.search + "?q=" + encodeURIComponent(q), {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (hits) { if (mine === seq) { render(hits); } })
      .catch(function () {});
  }
  function showTerm(info) {
    if (!info.found) { return; }
    var keep = grade.value;
    while (grade.options.length > 1) { grade.remove(1); }
    defs.innerHTML = "";
    var dl = el("dl");
    info.grades.forEach(function (g) {
      var labels = {1: "mild", 2: "moderate", 3: "severe", 4: "life-threatening", 5: "death"};
      var opt = el("option", "Grade " + g.grade + " — " + labels[g.grade]);
      opt.value = String(g.grade);
      if (opt.value === keep) { opt.selected = true; }
      grade.appendChild(opt);
      dl.appendChild(el("dt", "Grade " + g.grade));
      dl.appendChild(el("dd", g.text));
    });
    defs.appendChild(dl);
    soc.textContent = info.soc + " · MedDRA " + info.meddra_code + (info.other_specify ? " · verbatim required" : "");
    var verbatim = document.getElementById("verbatim");
    if (verbatim) { verbatim.required = !!info.other_specify; if (info.other_specify) { verbatim.focus(); } }
  }
  function pick(i) {
    var h = items[i];
    if (!h) { return; }
    input.value = h.term;
    close();
    fetch(input.dataset.info + "?term=" + encodeURIComponent(h.term), {credentials: "same-origin"})
      .then(function (r) { return r.json(); }).then(showTerm).catch(function () {});
  }
  input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(search, 60); });
  input.addEventListener("keydown", function (ev) {
    // Enter in the picker only ever picks the highlighted option: never the form's implicit
    // submission, which saved a stray draft AE (issue 11). The save buttons still submit.
    if (ev.key === "Enter") {
      ev.preventDefault();
      if (!list.hidden && active >= 0) { pick(active); }
      return;
    }
    if (list.hidden) { if (ev.key === "ArrowDown") { search(); } return; }
    if (ev.key === "ArrowDown") { ev.preventDefault(); highlight(Math.min(active + 1, items.length - 1)); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); highlight(Math.max(active - 1, 0)); }
    else if (ev.key === "Escape") { close(); }
  });
  input.addEventListener("blur", function () { setTimeout(close, 100); });
})();
