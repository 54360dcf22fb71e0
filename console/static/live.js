// jetflow console: live update. Pages whose <body> has a data-refresh
// period (ms) fetch themselves again that often and replace every
// element marked data-live (by id) with its new version; nothing else
// on the page moves, so open <details> and form fields stay as they are.
// Without JavaScript the pages are the same, only static.
(function () {
  "use strict";
  var period = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!period || period < 250 || !window.fetch || !window.DOMParser) {
    return;
  }
  var badge = document.getElementById("live");
  if (badge) {
    badge.hidden = false;
  }
  var busy = false;
  function update() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(window.location.href, { headers: { "X-Jetflow-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh) {
            el.replaceWith(document.importNode(fresh, true));
          }
        });
        var at = doc.getElementById("read-at");
        var mine = document.getElementById("read-at");
        if (at && mine) {
          mine.replaceWith(document.importNode(at, true));
        }
        if (badge) {
          badge.classList.remove("stale");
          badge.textContent = "live";
        }
        var next = parseInt(doc.body.getAttribute("data-refresh") || "0", 10);
        if (!next) {
          window.clearInterval(timer); // the instance ended: nothing more to follow
          if (badge) {
            badge.hidden = true;
          }
        }
      })
      .catch(function () {
        if (badge) {
          badge.classList.add("stale");
          badge.textContent = "offline";
        }
      })
      .finally(function () {
        busy = false;
      });
  }
  var timer = window.setInterval(update, period);
})();
