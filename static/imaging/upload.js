// Staff upload: one request per file, so each file shows its own result and the
// progress bar follows the bytes actually sent.
(function () {
  "use strict";
  const texts = JSON.parse(document.getElementById("upload-texts").textContent);
  const zone = document.getElementById("dropzone");
  const area = document.getElementById("progress-area");
  const bar = document.getElementById("progress");
  const list = document.getElementById("results");
  const summary = document.getElementById("summary");
  const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
  const state = { total: 0, done: 0, stored: 0, other: 0, bytesTotal: 0, bytesDone: 0 };
  const queue = [];
  let running = 0;
  const PARALLEL = 3;

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_, k) => String(values[k]));
  }
  function refresh() {
    bar.value = state.bytesTotal ? Math.round((100 * state.bytesDone) / state.bytesTotal) : 0;
    summary.textContent = format(texts.summary, {
      done: state.done, total: state.total, stored: state.stored, other: state.other,
    });
  }
  function addFiles(files) {
    if (!files.length) return;
    area.hidden = false;
    for (const file of files) {
      state.total += 1;
      state.bytesTotal += file.size;
      queue.push(file);
    }
    refresh();
    pump();
  }
  function pump() {
    while (running < PARALLEL && queue.length) {
      running += 1;
      send(queue.shift()).finally(() => { running -= 1; pump(); });
    }
  }
  function line(name, outcome, text) {
    const li = document.createElement("li");
    li.className = outcome;
    li.dataset.outcome = outcome;
    li.textContent = name + ": " + text;
    list.appendChild(li);
  }
  function send(file) {
    const name = file.webkitRelativePath || file.name;
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      let sent = 0;
      xhr.upload.onprogress = (e) => { state.bytesDone += e.loaded - sent; sent = e.loaded; refresh(); };
      xhr.onloadend = () => {
        state.bytesDone += file.size - sent;
        state.done += 1;
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (body && body.results) {
          for (const r of body.results) {
            if (r.outcome === "stored" || r.outcome === "duplicate") state.stored += 1; else state.other += 1;
            line(r.name, r.outcome, r.message + (r.reason ? " (" + r.reason + ")" : ""));
          }
        } else {
          state.other += 1;
          line(name, "failed", texts.failed + " (HTTP " + xhr.status + ")" + (body && body.error ? ": " + body.error : ""));
        }
        refresh();
        resolve();
      };
      const form = new FormData();
      form.append("file", file, name);
      xhr.open("POST", window.location.pathname);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.send(form);
    });
  }
  // Folders dropped onto the page are walked with the entries API.
  function walk(entry, out) {
    return new Promise((resolve) => {
      if (entry.isFile) {
        entry.file((f) => { out.push(f); resolve(); }, () => resolve());
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        const readAll = () => reader.readEntries(async (entries) => {
          if (!entries.length) return resolve();
          for (const e of entries) await walk(e, out);
          readAll();
        }, () => resolve());
        readAll();
      } else resolve();
    });
  }
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [];
    const items = Array.from(e.dataTransfer.items || []);
    if (items.length && items[0].webkitGetAsEntry) {
      for (const item of items) {
        const entry = item.webkitGetAsEntry();
        if (entry) await walk(entry, files);
      }
    } else files.push(...e.dataTransfer.files);
    addFiles(files);
  });
  for (const id of ["files", "folder"]) {
    document.getElementById(id).addEventListener("change", (e) => {
      addFiles(Array.from(e.target.files));
      e.target.value = "";
    });
  }
})();
