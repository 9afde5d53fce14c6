// ipywidgets 8 draws a slider's handle as a noUiSlider <div role="slider"> that its
// description label does not name (axe: aria-input-field-name, serious).  Name each
// handle after its widget's label as the widgets render from saved state.
(function () {
  function name(root) {
    root.querySelectorAll(".widget-slider .noUi-handle[role='slider']:not([aria-label])")
      .forEach(function (h) {
        var w = h.closest(".widget-slider");
        var label = w && w.querySelector(".widget-label");
        var text = label && label.textContent.trim();
        if (text) h.setAttribute("aria-label", text);
      });
  }
  new MutationObserver(function () { name(document); })
    .observe(document.documentElement, { childList: true, subtree: true });
})();
