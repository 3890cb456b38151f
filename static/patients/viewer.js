// The patient's image viewer: pick a series, step through its images, choose a window.
// Every image is a JPEG the portal renders from its own files (see patients/images.py).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var root = document.getElementById("viewer");
  if (!root || !data.series.length) { return; }
  var frame = document.getElementById("frame");
  var slider = document.getElementById("slider");
  var position = document.getElementById("position");
  var preset = document.getElementById("preset");
  var thumbs = root.querySelectorAll(".pp-thumb");
  var state = { series: 0, index: 0 };

  function url(item, extra) {
    var query = preset && preset.value !== "default" ? "?preset=" + encodeURIComponent(preset.value) : "";
    return data.base + "images/" + encodeURIComponent(item[0]) + "/" + item[1] + ".jpg" + query + (extra || "");
  }

  function show() {
    var frames = data.series[state.series].frames;
    state.index = Math.max(0, Math.min(state.index, frames.length - 1));
    frame.src = url(frames[state.index]);
    slider.max = String(frames.length);
    slider.value = String(state.index + 1);
    position.textContent = (state.index + 1) + " / " + frames.length;
    // Fetch the neighbours so stepping feels immediate.
    [state.index - 1, state.index + 1].forEach(function (i) {
      if (i >= 0 && i < frames.length) { new Image().src = url(frames[i]); }
    });
  }

  function step(delta) { state.index += delta; show(); }

  thumbs.forEach(function (button) {
    button.addEventListener("click", function () {
      thumbs.forEach(function (b) { b.removeAttribute("aria-pressed"); });
      button.setAttribute("aria-pressed", "true");
      state.series = Number(button.dataset.series);
      state.index = Math.floor(data.series[state.series].frames.length / 2);
      show();
    });
  });
  document.getElementById("prev").addEventListener("click", function () { step(-1); });
  document.getElementById("next").addEventListener("click", function () { step(1); });
  slider.addEventListener("input", function () { state.index = Number(slider.value) - 1; show(); });
  if (preset) { preset.addEventListener("change", show); }
  document.addEventListener("keydown", function (event) {
    if (event.target && event.target.tagName === "INPUT") { return; }
    if (event.key === "ArrowLeft" || event.key === "ArrowUp") { step(-1); event.preventDefault(); }
    if (event.key === "ArrowRight" || event.key === "ArrowDown") { step(1); event.preventDefault(); }
  });
  // Swipe left and right on a phone.
  var startX = null;
  frame.addEventListener("touchstart", function (e) { startX = e.touches[0].clientX; }, { passive: true });
  frame.addEventListener("touchend", function (e) {
    if (startX === null) { return; }
    var dx = e.changedTouches[0].clientX - startX;
    if (Math.abs(dx) > 30) { step(dx < 0 ? 1 : -1); }
    startX = null;
  });
  show();
})();
