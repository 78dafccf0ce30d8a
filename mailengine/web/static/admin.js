// MailEngine web admin: refreshes the dashboard in place (no libraries, nothing fetched
// from elsewhere). An element with data-refresh="/url" and data-seconds="N" is replaced
// with the HTML fragment at /url every N seconds; a logged-out session reloads the page.
(function () {
  "use strict";
  function refresher(box) {
    var url = box.getAttribute("data-refresh");
    var seconds = parseInt(box.getAttribute("data-seconds") || "5", 10);
    var busy = false;
    function tick() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.redirected || r.url.indexOf("/gui/admin/login") >= 0 || r.status === 401) {
            window.location.reload();
            return null;
          }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            box.innerHTML = html;
            box.removeAttribute("data-stale");
          }
        })
        .catch(function () { box.setAttribute("data-stale", "true"); })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, Math.max(1, seconds) * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var boxes = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < boxes.length; i++) { refresher(boxes[i]); }
  });
})();
