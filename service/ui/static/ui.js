// Results explorer: small progressive enhancements. Every page works without this file.
// - The timeline's detail line follows the mark under the pointer or with keyboard focus.
// - A face thumbnail that cannot be loaded is replaced by the "no thumbnail" placeholder.
(function () {
  "use strict";

  function markOf(target) {
    return target && target.closest ? target.closest("[data-detail]") : null;
  }

  function showDetail(event) {
    var mark = markOf(event.target);
    var panel = document.getElementById("timeline-detail");
    if (mark && panel) {
      panel.textContent = mark.getAttribute("data-detail");
    }
  }

  function placeholder(img) {
    var span = document.createElement("span");
    span.className = "thumb none";
    span.setAttribute("role", "img");
    span.setAttribute("aria-label", "Thumbnail not available");
    img.replaceWith(span);
  }

  function watchThumbnails() {
    var images = document.querySelectorAll("img.thumb");
    for (var i = 0; i < images.length; i++) {
      var img = images[i];
      if (img.complete && img.naturalWidth === 0 && img.getAttribute("loading") !== "lazy") {
        placeholder(img);
      } else {
        img.addEventListener("error", function (event) { placeholder(event.target); });
      }
    }
  }

  document.addEventListener("focusin", showDetail);
  document.addEventListener("mouseover", showDetail);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", watchThumbnails);
  } else {
    watchThumbnails();
  }
})();
