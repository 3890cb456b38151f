// Staff upload: one request per file, so each file shows its own result and the
// progress bar follows the bytes actually sent. Server answers are inserted as text
// (textContent), never as HTML.
(function () {
  "use strict";
  const texts = JSON.parse(document.getElementById("upload-texts").textContent);
  const form = document.getElementById("upload-form");
  const area = document.getElementById("progress-area");
  const bar = document.getElementById("progress");
  const list = document.getElementById("results");
  const summary = document.getElementById("summary");
  const folderInput = document.getElementById("folder");
  const url = form.action;
  const loginPath = form.dataset.loginUrl;
  // UPLOAD_MAX_REQUEST_BYTES: a file over it is refused here rather than sent for a 413.
  const maxBytes = Number(form.dataset.maxRequestBytes) || Infinity;
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const state = { total: 0, done: 0, stored: 0, other: 0, bytesTotal: 0, bytesDone: 0 };
  const queue = [];
  const PARALLEL = 3;
  let running = 0;

  // Phones and some browsers cannot pick folders; offer only what works.
  if (!("webkitdirectory" in folderInput)) document.getElementById("folder-picker").hidden = true;

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_, k) => String(values[k]));
  }
  function refresh() {
    const finished = state.done === state.total;
    const percent = state.bytesTotal ? (100 * state.bytesDone) / state.bytesTotal : 100;
    // 100 only once every answer is in, so a full bar means every file has its result.
    bar.value = finished ? 100 : Math.min(99, Math.floor(percent));
    area.dataset.state = finished ? "done" : "running";
    summary.textContent = format(texts.summary, {
      done: state.done, total: state.total, stored: state.stored, other: state.other,
    });
  }
  function line(name, outcome, text) {
    const li = document.createElement("li");
    li.className = outcome;
    li.dataset.outcome = outcome;
    const strong = document.createElement("span");
    strong.className = "name";
    strong.textContent = name;
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = text;
    li.append(strong, what);
    return li;
  }
  // Like imaging.sources: hidden files and DICOMDIR indexes are not images.
  function skipped(name) {
    const base = name.split("/").pop();
    return base.startsWith(".") || base.toUpperCase() === "DICOMDIR";
  }
  // items: [{file, name}] where name keeps the folder path the user chose.
  function addFiles(items) {
    if (!items.length) return;
    area.hidden = false;
    for (const item of items) {
      if (skipped(item.name)) {
        list.appendChild(line(item.name, "skipped", texts.skipped));
        continue;
      }
      if (item.file.size > maxBytes) {
        list.appendChild(line(item.name, "failed", texts.failed + ": " + texts.too_large));
        state.total += 1;
        state.done += 1;
        state.other += 1;
        continue;
      }
      item.li = line(item.name, "pending", texts.waiting);
      list.appendChild(item.li);
      state.total += 1;
      state.bytesTotal += item.file.size;
      queue.push(item);
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
  function answer(xhr) {
    try { return JSON.parse(xhr.responseText); } catch (e) { return null; }
  }
  function failure(xhr, body) {
    const redirected = xhr.responseURL && new URL(xhr.responseURL).pathname === loginPath;
    if (redirected) return texts.session;
    let text = texts.failed + (xhr.status ? " (HTTP " + xhr.status + ")" : "");
    if (body && body.error) text += ": " + body.error;
    return text;
  }
  function send(item) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      let sent = 0;
      xhr.upload.onprogress = (e) => {
        state.bytesDone += e.loaded - sent;
        sent = e.loaded;
        refresh();
      };
      xhr.onloadend = () => {
        state.bytesDone += item.file.size - sent;
        state.done += 1;
        const body = answer(xhr);
        const lines = [];
        if (body && Array.isArray(body.results)) {
          for (const r of body.results) {
            if (r.outcome === "stored" || r.outcome === "duplicate") state.stored += 1;
            else state.other += 1;
            lines.push(line(r.name, r.outcome, r.message + (r.reason ? ": " + r.reason : "")));
          }
        }
        if (!lines.length) {
          state.other += 1;
          lines.push(line(item.name, "failed", failure(xhr, body)));
        }
        item.li.replaceWith(...lines);
        refresh();
        resolve();
      };
      const data = new FormData();
      data.append("path", item.name);
      data.append("file", item.file, item.name);
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.send(data);
    });
  }

  // Dropped folders are walked with the entries API. The drop's items must all be read
  // before the first await: the browser empties the DataTransfer after the event.
  function readFile(entry) {
    return new Promise((resolve) => entry.file(resolve, () => resolve(null)));
  }
  function readBatch(reader) {
    return new Promise((resolve) => reader.readEntries(resolve, () => resolve([])));
  }
  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await readFile(entry);
      if (file) out.push({ file: file, name: entry.fullPath.replace(/^\//, "") });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (let batch = await readBatch(reader); batch.length; batch = await readBatch(reader)) {
        for (const child of batch) await walk(child, out);
      }
    }
  }
  async function dropped(dataTransfer) {
    const entries = [];
    const out = [];
    const items = Array.from(dataTransfer.items || []);
    for (const item of items) {
      if (item.kind !== "file") continue;
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
      else {
        const file = item.getAsFile();
        if (file) out.push({ file: file, name: file.name });
      }
    }
    if (!items.length) {
      for (const file of Array.from(dataTransfer.files || [])) out.push({ file: file, name: file.name });
    }
    for (const entry of entries) await walk(entry, out);
    return out;
  }

  let depth = 0;
  form.addEventListener("dragenter", (e) => { e.preventDefault(); depth += 1; form.classList.add("over"); });
  form.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) form.classList.remove("over"); });
  form.addEventListener("dragover", (e) => { e.preventDefault(); });
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    form.classList.remove("over");
    dropped(e.dataTransfer).then(addFiles);
  });
  // A drop that misses the zone must not make the browser open the file instead.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  for (const input of [document.getElementById("files"), folderInput]) {
    input.addEventListener("change", () => {
      addFiles(Array.from(input.files).map((f) => ({ file: f, name: f.webkitRelativePath || f.name })));
      input.value = "";
    });
  }
  form.addEventListener("submit", (e) => e.preventDefault());
  window.addEventListener("beforeunload", (e) => {
    if (running || queue.length) { e.preventDefault(); e.returnValue = ""; }
  });
})();
