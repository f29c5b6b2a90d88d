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

  // Follow results whose image is being stored, in place: an element with data-poll-url
  // (the generation's API URL) holds, or is, elements with data-result-id. The generation
  // page follows each of its cards, and while the generation runs it adds the card of
  // each image as it arrives (rendered by the server: data-cards-url); a result's detail
  // page follows that result. Poll every second until the generation is over and none
  // of them is pending or storing.
  var busyStatuses = { pending: true, storing: true };

  // What a reload would show: the API says whether the image is lost.
  function badgeLabel(result) {
    return result.lost ? "lost" : result.storageStatus || "";
  }

  // A card shows the stored image's thumbnail, which the derivatives stage makes a
  // moment after storing: until the API gives its URL, a neutral placeholder (never an
  // image that is not there yet).
  function showsThumbnail(item) {
    return item.hasAttribute("data-shows-thumbnail");
  }

  function waitsForThumbnail(item, result) {
    return showsThumbnail(item) && result.storageStatus === "stored" && !result.thumbnailUrl;
  }

  function thumbnailPlaceholder() {
    var placeholder = document.createElement("span");
    placeholder.className = "placeholder placeholder--stored";
    placeholder.setAttribute("data-thumbnail-placeholder", "");
    var title = document.createElement("strong");
    title.textContent = "Stored";
    var note = document.createElement("small");
    note.textContent = "thumbnail on its way";
    placeholder.append(title, note);
    return placeholder;
  }

  function showStored(item, result) {
    var media = item.querySelector("[data-media]");
    var src = showsThumbnail(item) ? result.thumbnailUrl : item.getAttribute("data-stored-src");
    if (media && showsThumbnail(item) && !src) {
      if (!media.querySelector("[data-thumbnail-placeholder]")) {
        media.replaceChildren(thumbnailPlaceholder());
      }
    } else if (media && src) {
      var shown = media.querySelector("img");
      var img = document.createElement("img");
      img.src = src;
      img.alt = shown ? shown.alt : (item.querySelector(".card__prompt") || {}).textContent || "";
      var href = item.getAttribute("data-stored-href");
      var content = img;
      if (href) {
        content = document.createElement("a");
        content.href = href;
        content.appendChild(img);
      }
      media.replaceChildren(content);
    }
    var download = item.querySelector("[data-download-link]");
    if (download) download.hidden = false;
    var restore = item.querySelector("[data-restore-form]");
    if (restore) restore.remove();
  }

  function showResult(item, result) {
    var status = result.storageStatus || "";
    var badge = item.querySelector("[data-storage-badge]");
    if (badge && status) {
      badge.textContent = badgeLabel(result);
      badge.className = "badge badge--" + badgeLabel(result);
    }
    var error = item.querySelector("[data-storage-error]");
    if (error) {
      error.textContent = result.storageError || "";
      error.hidden = !result.storageError;
      var label = item.querySelector("[data-storage-error-label]");
      if (label) label.hidden = error.hidden;
    }
    // data-storage-status starts as the server rendered it: show the image only once,
    // and a card's thumbnail once it is made.
    var before = item.getAttribute("data-storage-status");
    item.setAttribute("data-storage-status", status);
    var thumbnailArrived =
      showsThumbnail(item) && result.thumbnailUrl && !item.querySelector("[data-media] img");
    if (status === "stored" && (before !== "stored" || thumbnailArrived)) {
      showStored(item, result);
    }
  }

  var generationNotes = {
    running: "Generating… each image appears here as it arrives.",
    interrupted: "Interrupted: the process calling the models stopped. The images below are all it received, and they are kept."
  };

  function followResults(panel) {
    var url = panel.getAttribute("data-poll-url");
    var note = panel.querySelector("[data-poll-note]");
    var cards = panel.querySelector("[data-cards]");
    var cardsUrl = panel.getAttribute("data-cards-url");

    function itemFor(id) {
      var selector = '[data-result-id="' + id + '"]';
      return panel.matches(selector) ? panel : panel.querySelector(selector);
    }

    // New results of a running generation: add the cards the page does not show yet.
    function addMissingCards() {
      return fetch(cardsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var fragment = document.createElement("template");
          fragment.innerHTML = html;
          fragment.content.querySelectorAll("[data-result-id]").forEach(function (card) {
            if (!itemFor(card.getAttribute("data-result-id"))) cards.appendChild(card);
          });
        });
    }

    function update(data) {
      var stillBusy = data.status === "running";
      var missing = false;
      (data.results || []).forEach(function (result) {
        var item = itemFor(result.id);
        if (!item) {
          // On the generate page, a new image; elsewhere, a result not shown here.
          if (cards && cardsUrl) missing = true;
          return;
        }
        if (busyStatuses[result.storageStatus] || waitsForThumbnail(item, result)) {
          stillBusy = true;
        }
        showResult(item, result);
      });
      if (panel.getAttribute("data-generation-status") !== data.status && data.status) {
        panel.setAttribute("data-generation-status", data.status);
        if (note && generationNotes[data.status]) note.textContent = generationNotes[data.status];
      }
      return { busy: stillBusy || missing, missing: missing };
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
          var state = update(data);
          if (state.missing) {
            return addMissingCards().then(function () { window.setTimeout(poll, 0); });
          }
          if (state.busy) {
            window.setTimeout(poll, 1000);
          } else if (note && data.status !== "interrupted") {
            note.textContent = "Every image of this generation has been handled.";
          }
        })
        .catch(function () {
          window.setTimeout(poll, 3000); // a hiccup: try again, more slowly
        });
    }
    window.setTimeout(poll, 1000);
  }

  function setUpPolling() {
    document.querySelectorAll("[data-poll-url]").forEach(followResults);
  }

  // With this script the generate form asks for a background generation: the page
  // comes back at once and fills in image by image. Without it, the form waits.
  function setUpBackgroundGenerate() {
    document.querySelectorAll("[data-background-field]").forEach(function (field) {
      field.value = "1";
    });
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

  // A model's size menu matters only while the model is chosen: show it then. Without
  // this, every menu is shown, and those of models left unchosen are ignored.
  function setUpModelSizes() {
    document.querySelectorAll("[data-model-choice]").forEach(function (row) {
      var box = row.querySelector('input[type="checkbox"]');
      var menu = row.querySelector("select");
      if (!box || !menu) return;
      var show = function () { menu.hidden = !box.checked; };
      box.addEventListener("change", show);
      show();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSelectAll();
    setUpPolling();
    setUpBackgroundGenerate();
    setUpBusyButtons();
    setUpModelSizes();
  });
})();
