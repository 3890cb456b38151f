// Filters the DICOM header table as the user types (the same search the server does on
// submit, ?q=): a row stays when it or an element nested in it matches; sequences holding
// a match open. No inline script: the Content-Security-Policy refuses it.
(() => {
  const input = document.querySelector("[data-header-filter]");
  const table = document.getElementById("header");
  const none = document.getElementById("header-none");
  if (!input || !table) return;

  function filter() {
    const query = input.value.trim().toLowerCase();
    // Nested rows come after the row holding them: walk backwards so each sequence row
    // already knows whether any of its rows is still shown.
    const rows = Array.from(table.querySelectorAll("tr[data-search]")).reverse();
    let shown = 0;
    for (const row of rows) {
      const own = !query || row.dataset.search.includes(query);
      const nested = Array.from(row.querySelectorAll("tr[data-search]"));
      const inside = nested.some((child) => !child.hidden);
      if (own && query) nested.forEach((child) => { child.hidden = false; });
      row.hidden = !(own || inside);
      if (query && inside) row.querySelectorAll("details").forEach((d) => { d.open = true; });
      if (!row.hidden) shown += 1;
    }
    // An item whose rows are all hidden is hidden with them.
    table.querySelectorAll("details.ws-item").forEach((item) => {
      item.hidden = !item.querySelector("tr[data-search]:not([hidden])");
    });
    if (none) none.hidden = shown > 0;
  }

  input.addEventListener("input", filter);
  if (input.value) filter();
})();
