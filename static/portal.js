// Behaviour the templates ask for with data- attributes instead of inline handlers, which
// the Content-Security-Policy refuses: <select data-submit-on-change>, <button data-print>.
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.hasAttribute("data-submit-on-change")) {
    target.form?.submit();
  }
});
document.addEventListener("click", (event) => {
  const target = event.target;
  if (target instanceof Element && target.closest("[data-print]")) {
    window.print();
  }
});
