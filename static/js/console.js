/* Small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function on(root) {
    // Selects that apply at once (their submit button is hidden when scripts run).
    root.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form && el.form.requestSubmit(); });
    });
    // "Select all" for the bulk replay checkboxes.
    root.querySelectorAll("input[data-select-all]").forEach(function (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll('input[type=checkbox][name="' + all.dataset.selectAll + '"]').forEach(function (box) {
          box.checked = all.checked;
        });
      });
    });
    // Replay: the payload editor only matters in edit mode.
    root.querySelectorAll('input[name="mode"]').forEach(function (radio) {
      var update = function () {
        var edit = radio.form && radio.form.querySelector('input[name="mode"][value="edit"]');
        radio.form.querySelectorAll(".js-edit-only").forEach(function (box) {
          box.hidden = !(edit && edit.checked);
        });
      };
      radio.addEventListener("change", update);
      update();
    });
    // Kill switch: show the fields the chosen level needs.
    root.querySelectorAll("select[data-controls-switch]").forEach(function (select) {
      var update = function () {
        select.form.querySelectorAll("[data-for-scope]").forEach(function (box) {
          box.hidden = box.dataset.forScope.split(" ").indexOf(select.value) < 0;
        });
      };
      select.addEventListener("change", update);
      update();
    });
    // Reconciliation: typing a value picks "edit" for that field.
    root.querySelectorAll(".field-choice textarea").forEach(function (area) {
      area.addEventListener("input", function () {
        var radio = area.closest(".field-choice").querySelector('input[type=radio][value="value"]');
        if (radio && area.value.trim()) { radio.checked = true; }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { on(document); });
  document.addEventListener("htmx:load", function (evt) { if (evt.target !== document.body) { on(evt.target); } });
  // Tell assistive technology when a region is being refreshed.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var target = evt.detail.target;
    if (target) { target.setAttribute("aria-busy", "true"); }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    var target = evt.detail.target;
    if (target) { target.removeAttribute("aria-busy"); }
  });
})();
