/* genvault gallery: small progressive enhancements. Every action works without it. */
(function () {
  "use strict";

  // "Select all on this page" for the bulk actions of the index.
  function setUpSelectAll() {
    var toggle = document.querySelector("[data-select-all]");
    if (!toggle) return;
    var label = toggle.closest(".js-only");
    if (label) label.hidden = false;
    var boxes = function () {
      return document.querySelectorAll('input[type="checkbox"][name="ids"]');
    };
    toggle.addEventListener("change", function () {
      boxes().forEach(function (box) { box.checked = toggle.checked; });
    });
  }

  // The generation page: poll the API every second until nothing is pending or storing,
  // updating each result's storage badge and showing its thumbnail once stored.
  function setUpPolling() {
    var panel = document.querySelector("[data-poll-url]");
    if (!panel) return;
    var url = panel.getAttribute("data-poll-url");
    var note = panel.querySelector("[data-poll-note]");
    var busy = { pending: true, storing: true };

    function showStored(card) {
      var media = card.querySelector("[data-media]");
      if (media && !media.querySelector("img")) {
        var img = document.createElement("img");
        img.src = card.getAttribute("data-thumb-url");
        img.alt = (card.querySelector(".card__prompt") || {}).textContent || "";
        media.replaceChildren(img);
      }
      var restore = card.querySelector("[data-restore-form]");
      if (restore) restore.remove();
    }

    function update(data) {
      var stillBusy = false;
      (data.results || []).forEach(function (result) {
        var status = result.storageStatus || "";
        if (busy[status]) stillBusy = true;
        var card = panel.querySelector('[data-result-id="' + result.id + '"]');
        if (!card) return;
        var badge = card.querySelector("[data-storage-badge]");
        if (badge && status) {
          badge.textContent = status;
          badge.className = "badge badge--" + status;
        }
        if (status === "stored") showStored(card);
      });
      return stillBusy;
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status >= 400 && response.status < 500) {
            // Signed out, or the generation is gone: polling cannot help; a reload will.
            if (note) note.textContent = "Could not refresh the statuses (" + response.status + "): reload the page.";
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          if (data === null) return;
          if (update(data)) {
            window.setTimeout(poll, 1000);
          } else if (note) {
            note.textContent = "Every image of this generation has been handled.";
          }
        })
        .catch(function () {
          window.setTimeout(poll, 3000); // a hiccup: try again, more slowly
        });
    }
    window.setTimeout(poll, 1000);
  }

  // Tell the user the generate form is working (the upstream may take a while).
  function setUpBusyButtons() {
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        var button = event.submitter;
        if (button && button.hasAttribute("data-busy-label")) {
          window.setTimeout(function () {
            button.disabled = true;
            button.textContent = button.getAttribute("data-busy-label");
          }, 0);
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSelectAll();
    setUpPolling();
    setUpBusyButtons();
  });
})();
