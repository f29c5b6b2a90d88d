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


  // The viewer: a card opens its result over the gallery, in a modal dialog whose
  // content the server renders (the same pieces as the result's page). The arrow keys
  // step through the gallery's filtered list; past the end of the page shown, the grid
  // behind moves to the next page, so that closing puts the focus back on the card.
  // The URL names the result shown (?view=ID, with the filters and the page), so that
  // a link or a reload opens it again. Without this script, cards link to the page.
  function setUpViewer() {
    var dialog = document.querySelector("[data-viewer]");
    if (!dialog) return;
    var body = dialog.querySelector("[data-viewer-body]");
    var status = dialog.querySelector("[data-viewer-status]");
    var help = document.querySelector("[data-shortcuts]");
    var steps = {
      newer: dialog.querySelector('[data-viewer-step="newer"]'),
      older: dialog.querySelector('[data-viewer-step="older"]')
    };
    var current = null; // the content shown: [data-viewer-content]
    var busy = false;

    function galleryQuery() {
      var query = new URLSearchParams(window.location.search);
      query.delete("view");
      return query;
    }

    function viewerUrl(id) {
      var query = galleryQuery().toString();
      return dialog.getAttribute("data-viewer-url").replace("/0/", "/" + id + "/") +
        (query ? "?" + query : "");
    }

    function showInUrl(id) {
      var query = galleryQuery();
      if (id) query.set("view", id);
      var search = query.toString();
      window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
    }

    function cardFor(id) {
      return document.querySelector('[data-viewer-grid] [data-result-id="' + id + '"]');
    }

    function fetchHtml(url, init) {
      var options = { credentials: "same-origin", headers: { Accept: "text/html" } };
      return fetch(url, Object.assign(options, init || {})).then(function (response) {
        if (!response.ok) {
          var error = new Error("HTTP " + response.status);
          error.status = response.status;
          throw error;
        }
        return response.text();
      });
    }

    function fragmentOf(html) {
      var template = document.createElement("template");
      template.innerHTML = html;
      return template.content;
    }

    // Put the server's rendering in the dialog; `changed`: a form changed the result,
    // so its card behind takes the fresh rendering too.
    function show(html, changed) {
      var content = fragmentOf(html).querySelector("[data-viewer-content]");
      if (!content) throw new Error("an unexpected answer: reload the page");
      var card = content.querySelector("template[data-viewer-card]");
      var shown = cardFor(content.getAttribute("data-result-id"));
      if (changed && card && shown) {
        var fresh = card.content.querySelector("[data-result-id]");
        var box = shown.querySelector('input[name="ids"]');
        var freshBox = fresh.querySelector('input[name="ids"]');
        if (box && freshBox) freshBox.checked = box.checked;
        shown.replaceWith(fresh);
      }
      if (card) card.remove();
      body.replaceChildren(content);
      current = content;
      steps.newer.disabled = !content.hasAttribute("data-newer-id");
      steps.older.disabled = !content.hasAttribute("data-older-id");
      var messages = content.querySelector("[data-viewer-messages]");
      status.textContent = messages ? messages.textContent.trim() : "";
      if (!dialog.contains(document.activeElement) || document.activeElement.disabled) {
        dialog.querySelector("[data-viewer-close]").focus();
      }
    }

    function open(id) {
      return fetchHtml(viewerUrl(id))
        .then(function (html) {
          show(html, false);
          if (!dialog.open) dialog.showModal();
          showInUrl(id);
        })
        .catch(function (error) {
          if (dialog.open) {
            status.textContent = "Could not open result " + id + " (" + error.message + ").";
          } else if (error.status === 404) {
            showInUrl(null); // deleted since the link was made
          }
        });
    }

    // One result loads at a time; a key pressed meanwhile is kept (the last one) and
    // done next, so that quick presses all count.
    var queued = null;
    function whenFree(work) {
      if (busy) {
        queued = work;
        return;
      }
      busy = true;
      work().finally(function () {
        busy = false;
        var next = queued;
        queued = null;
        if (next) whenFree(next);
      });
    }

    // The page of the grid that holds the result past this end of the page shown: the
    // keyset cursor is the result we step from, as the pagination's links cut pages.
    function turnPage(direction, fromId) {
      var query = galleryQuery();
      query.delete("before");
      query.delete("after");
      query.set(direction === "older" ? "before" : "after", fromId);
      return fetchHtml(window.location.pathname + "?" + query.toString()).then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        ["[data-viewer-grid]", ".pagination", ".summary"].forEach(function (selector) {
          var fresh = page.querySelector(selector);
          var shown = document.querySelector(selector);
          if (fresh && shown) shown.replaceWith(document.adoptNode(fresh));
        });
        window.history.replaceState(null, "", window.location.pathname + "?" + query.toString());
      });
    }

    function step(direction) {
      whenFree(function () {
        var target = current && current.getAttribute(
          direction === "older" ? "data-older-id" : "data-newer-id"
        );
        if (!target) return Promise.resolve();
        var from = current.getAttribute("data-result-id");
        var ready = !cardFor(target) && cardFor(from) ? turnPage(direction, from) : Promise.resolve();
        return ready
          .then(function () { return open(target); })
          .catch(function () { status.textContent = "Could not load the next page of results."; });
      });
    }

    var returnFromHelp = null;
    function toggleHelp() {
      if (!help) return;
      if (help.open) {
        help.close();
      } else {
        returnFromHelp = document.activeElement;
        help.showModal();
      }
    }

    // Closed (Escape, the Close button): the URL forgets the result, and the focus goes
    // back to its card, the one stepped to if it is on the page, else the one opened.
    var opener = null;
    dialog.addEventListener("close", function () {
      var id = current && current.getAttribute("data-result-id");
      current = null;
      body.replaceChildren();
      showInUrl(null);
      var card = id && cardFor(id);
      var target = (card && card.querySelector("[data-card-focus]")) || opener;
      if (target && document.contains(target)) target.focus();
    });

    if (help) {
      help.addEventListener("close", function () {
        if (returnFromHelp && document.contains(returnFromHelp)) returnFromHelp.focus();
      });
      document.querySelectorAll("[data-shortcuts-open]").forEach(function (button) {
        button.addEventListener("click", toggleHelp);
      });
    }

    document.addEventListener("click", function (event) {
      var link = event.target.closest("[data-viewer-grid] [data-viewer-open]");
      if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      var card = link.closest("[data-result-id]");
      event.preventDefault();
      opener = card.querySelector("[data-card-focus]") || link;
      whenFree(function () { return open(card.getAttribute("data-result-id")); });
    });

    dialog.addEventListener("click", function (event) {
      if (event.target.closest("[data-viewer-close]")) dialog.close();
      var stepButton = event.target.closest("[data-viewer-step]");
      if (stepButton) step(stepButton.getAttribute("data-viewer-step"));
      var zoom = event.target.closest("[data-zoom]");
      if (zoom) {
        var actual = zoom.getAttribute("aria-pressed") !== "true";
        zoom.setAttribute("aria-pressed", String(actual));
        zoom.closest("[data-media]").classList.toggle("viewer__image--actual", actual);
      }
    });

    // Star and tags change in place: the form is sent as it is, and comes back to the
    // viewer's rendering of the result (with the message), instead of the page.
    dialog.addEventListener("submit", function (event) {
      var form = event.target;
      if (!current || !form.closest(".organize")) return;
      event.preventDefault();
      var data = new FormData(form, event.submitter);
      data.set("next", viewerUrl(current.getAttribute("data-result-id")));
      var focused = form.contains(document.activeElement) ? document.activeElement : null;
      var action = form.getAttribute("action");
      fetchHtml(action, { method: "POST", body: data })
        .then(function (html) {
          show(html, true);
          if (!focused) return;
          var again = body.querySelector('form[action="' + action + '"]');
          var twin = again && again.querySelector(focused.tagName.toLowerCase() + (focused.name ? '[name="' + focused.name + '"]' : ""));
          (twin || body.querySelector(".organize input[name=tags]") || dialog).focus();
        })
        .catch(function (error) { status.textContent = "Nothing changed (" + error.message + ")."; });
    });

    var keys = Object.create(null);
    Object.assign(keys, {
      ArrowRight: function () { step("older"); },
      j: function () { step("older"); },
      ArrowLeft: function () { step("newer"); },
      k: function () { step("newer"); },
      f: function () {
        var star = current && current.querySelector(".organize .star");
        if (star) star.form.requestSubmit(star);
      }
    });
    ["d", "c", "i", "Delete"].forEach(function (key) {
      keys[key] = function () {
        var link = current && current.querySelector('[data-shortcut="' + key + '"]');
        if (link) link.click();
      };
    });

    // A modal dialog keeps the page behind inert, but Tab would still leave it for the
    // browser's own controls: from its last control, Tab goes round to its first.
    var focusable =
      'a[href], button:not([disabled]), input:not([type="hidden"]):not([disabled]), ' +
      "select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";
    function trapFocus(event) {
      var box = help && help.open ? help : dialog.open ? dialog : null;
      if (!box) return;
      var inside = Array.prototype.filter.call(box.querySelectorAll(focusable), function (el) {
        return el.getClientRects().length > 0;
      });
      if (!inside.length) return;
      var first = inside[0];
      var last = inside[inside.length - 1];
      var active = document.activeElement;
      if (event.shiftKey && (active === first || !box.contains(active))) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && (active === last || !box.contains(active))) {
        event.preventDefault();
        first.focus();
      }
    }

    document.addEventListener("keydown", function (event) {
      if (event.key === "Tab") {
        trapFocus(event);
        return;
      }
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      var target = event.target;
      if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
      if (event.key === "?") {
        event.preventDefault();
        toggleHelp();
        return;
      }
      if (!dialog.open || (help && help.open) || !keys[event.key]) return;
      event.preventDefault();
      keys[event.key]();
    });

    var linked = new URLSearchParams(window.location.search).get("view");
    if (linked && /^[0-9]+$/.test(linked)) {
      var linkedCard = cardFor(linked);
      opener = linkedCard && linkedCard.querySelector("[data-card-focus]");
      whenFree(function () { return open(linked); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSelectAll();
    setUpPolling();
    setUpBackgroundGenerate();
    setUpBusyButtons();
    setUpModelSizes();
    setUpViewer();
  });
})();
