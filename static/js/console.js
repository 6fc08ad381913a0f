/* Small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function on(root) {
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

  // First visit without a stored time zone: send the browser's zone once, so times read in local time
  // from the next page on. The server keeps it only if the person has not chosen one.
  function detectTimezone() {
    var link = document.querySelector("[data-tz-detect]");
    if (!link || !window.fetch || !window.Intl) { return; }
    var key = "tz-detect-sent:" + (link.dataset.tzUser || "");
    try {
      if (window.sessionStorage.getItem(key)) { return; }
      window.sessionStorage.setItem(key, "1");
    } catch (e) { /* storage blocked: the server still ignores repeats */ }
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    if (!zone) { return; }
    fetch(link.dataset.tzDetect, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": headers["x-csrftoken"] || "", "Content-Type": "application/x-www-form-urlencoded" },
      body: "tz=" + encodeURIComponent(zone)
    }).then(function (response) {
      if (response.status === 204) { link.removeAttribute("data-tz-detect"); }
    }).catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () { on(document); detectTimezone(); });
  document.addEventListener("htmx:load", function (evt) { if (evt.target !== document.body) { on(evt.target); } });
  // Background refreshes (data-refresh-when-visible) wait while the tab is hidden.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.hasAttribute("data-refresh-when-visible") && document.visibilityState !== "visible") {
      evt.preventDefault();
    }
  });
  // Tell assistive technology when a region is being refreshed.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var target = evt.detail.target;
    if (target && !evt.defaultPrevented) { target.setAttribute("aria-busy", "true"); }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    var target = evt.detail.target;
    if (target) { target.removeAttribute("aria-busy"); }
  });
})();
