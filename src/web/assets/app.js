// The barge web page: lists the share, downloads, uploads with an end-to-end MD5 check, renames
// and deletes. Names are always put into the page as text (textContent), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { me: null, files: [], pending: 0, sort: "name", desc: false, filter: "" };
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const ID = /^[0-9a-fA-F]{32}$/;

function folder() {
  // The folder shown, from the address: "/?folder=a/b/" (as the server renders it without script).
  const f = new URLSearchParams(location.search).get("folder") || "";
  return f && !f.endsWith("/") ? f + "/" : f;
}

function folderUrl(f) {
  return "/?folder=" + encodeURIComponent(f);
}

// Folder links change the address and the table, without reloading the page.
function go(e) {
  const a = e.target.closest("a[data-folder]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  history.pushState(null, "", a.href);
  render();
}

function human(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function fileUrl(name) {
  return "/files/" + name.split("/").map(encodeURIComponent).join("/");
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function say(text, bad = false) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
}

async function errorText(res) {
  try {
    const body = await res.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `${res.status} ${res.statusText}`;
}

// Headers for a request that changes something: a page logged in with a cookie proves it is
// this page with the session's CSRF token.
function writeHeaders(extra = {}) {
  return state.me && state.me.csrf ? { ...extra, "X-Barge-CSRF": state.me.csrf } : extra;
}

async function load() {
  const res = await fetch("/api/me");
  state.me = await res.json();
  $("host").textContent = location.host;
  const loggedOut = state.me.principal === null;
  $("login").hidden = !loggedOut;
  $("logout").hidden = !state.me.csrf;
  if (loggedOut) {
    $("who").textContent = state.me.logins ? "Log in to see the files."
      : "This server takes logins over TLS only.";
    $("drop").hidden = true;
    $("browse").hidden = true;
    return;
  }
  $("who").textContent = `Signed in as ${state.me.principal}; you may ` +
    [state.me.list && "list", state.me.get && "download", state.me.put && "upload",
     state.me.modify && "rename and delete"].filter(Boolean).join(", ") + ".";
  if (state.me.fingerprint) {
    $("fingerprint").textContent = `Server key ${state.me.fingerprint} (the same as barge serve prints)`;
  }
  $("drop").hidden = !state.me.put;
  $("browse").hidden = !state.me.list;
  await refresh();
}

async function refresh() {
  if (!state.me.list) return;
  const res = await fetch("/api/files");
  if (!res.ok) { say(await errorText(res), true); return; }
  state.files = await res.json();
  state.pending = Number(res.headers.get("Barge-Pending") || 0);
  render();
}

// The entries of the folder shown: its files, and one row per sub-folder.
function entries() {
  const here = folder();
  const folders = new Map();
  const files = [];
  for (const f of state.files) {
    if (!f.name.startsWith(here)) continue;
    const rest = f.name.slice(here.length);
    const slash = rest.indexOf("/");
    if (slash >= 0) {
      const name = rest.slice(0, slash);
      const d = folders.get(name) || { name, size: 0, count: 0, folder: true };
      d.size += f.size;
      d.count += 1;
      folders.set(name, d);
    } else {
      files.push({ ...f, leaf: rest });
    }
  }
  const filter = state.filter.toLowerCase();
  const keep = (e) => !filter || (e.leaf || e.name).toLowerCase().includes(filter);
  const cmp = state.sort === "size"
    ? (a, b) => a.size - b.size || collator.compare(a.name, b.name)
    : (a, b) => collator.compare(a.leaf || a.name, b.leaf || b.name);
  const sorted = (list) => {
    const s = list.filter(keep).sort(cmp);
    return state.desc ? s.reverse() : s;
  };
  return [...sorted([...folders.values()]), ...sorted(files)];
}

function render() {
  const here = folder();
  const crumbs = $("crumbs");
  crumbs.replaceChildren(el("a", { href: folderUrl(""), "data-folder": "", text: "All files" }));
  let path = "";
  for (const part of here.split("/").filter(Boolean)) {
    path += part + "/";
    crumbs.append(" / ", el("a", { href: folderUrl(path), "data-folder": path, text: part }));
  }
  $("drop-where").textContent = here ? ` into ${here}` : "";

  const rows = entries().map((e) => e.folder ? folderRow(here, e) : fileRow(e));
  $("files").tBodies[0].replaceChildren(...rows);
  const empty = $("empty");
  const pending = state.pending ? ` ${state.pending} more being indexed; refresh in a moment.` : "";
  empty.hidden = rows.length > 0 && !pending;
  empty.textContent = rows.length ? pending
    : (state.filter ? "Nothing matches the filter." : "No files available at the moment.") + pending;
  $("sort-name").textContent = "Name" + (state.sort === "name" ? (state.desc ? " ▼" : " ▲") : "");
  $("sort-size").textContent = "Size" + (state.sort === "size" ? (state.desc ? " ▼" : " ▲") : "");
}

function folderRow(here, d) {
  return el("tr", {},
    el("td", { class: "name" },
      el("a", { class: "folder", href: folderUrl(here + d.name + "/"), "data-folder": here + d.name + "/",
                text: d.name })),
    el("td", { class: "num", title: `${d.size} bytes`, text: human(d.size) }),
    el("td", { class: "id muted", text: `${d.count} file${d.count === 1 ? "" : "s"}` }),
    el("td", { class: "actions" }));
}

function fileRow(f) {
  // A name that reads as an id would be taken as one ("ids win"): link such a file by its id.
  const url = fileUrl(ID.test(f.name) ? f.id : f.name);
  const actions = el("td", { class: "actions" });
  if (state.me.get) actions.append(el("a", { class: "button", href: url, download: f.leaf, text: "Download" }));
  if (state.me.modify) {
    actions.append(
      el("button", { class: "small", type: "button", text: "Rename", onclick: () => rename(f) }),
      el("button", { class: "small danger", type: "button", text: "Delete", onclick: () => remove(f) }));
  }
  const name = state.me.get ? el("a", { href: url, download: f.leaf, text: f.leaf }) : f.leaf;
  return el("tr", {},
    el("td", { class: "name" }, name),
    el("td", { class: "num", title: `${f.size} bytes`, text: human(f.size) }),
    el("td", { class: "id", title: f.id, text: f.id }),
    actions);
}

async function rename(f) {
  const to = prompt(`New name for ${f.name}`, f.name);
  if (to === null || to === f.name) return;
  const res = await fetch("/api/rename", {
    method: "POST", headers: writeHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify({ from: ID.test(f.name) ? f.id : f.name, to }),
  });
  if (res.ok) say(`Renamed ${f.name} to ${(await res.json()).name}`);
  else say(`Could not rename ${f.name}: ${await errorText(res)}`, true);
  await refresh();
}

async function remove(f) {
  if (!confirm(`Delete ${f.name}? This cannot be undone.`)) return;
  const res = await fetch(fileUrl(ID.test(f.name) ? f.id : f.name), { method: "DELETE", headers: writeHeaders() });
  if (res.ok) say(`Deleted ${f.name}`);
  else say(`Could not delete ${f.name}: ${await errorText(res)}`, true);
  await refresh();
}

// The MD5 of a file, read in slices so that a large file is never held in memory whole.
async function md5Of(file, onProgress) {
  const hasher = await hashwasm.createMD5();
  hasher.init();
  const step = 4 << 20;
  for (let at = 0; at < file.size; at += step) {
    hasher.update(new Uint8Array(await file.slice(at, at + step).arrayBuffer()));
    onProgress(Math.min(at + step, file.size));
  }
  return hasher.digest("hex");
}

function send(url, file, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(writeHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
    xhr.onerror = () => resolve({ status: 0, text: "" });
    xhr.send(file);
  });
}

const queue = [];
let running = 0;

function enqueue(files) {
  const here = folder();
  for (const file of files) {
    const name = here + file.name;
    const bar = el("progress", { max: 1, value: 0 });
    const st = el("span", { class: "state", text: "waiting" });
    const detail = el("span", { class: "detail" });
    $("uploads").prepend(el("li", {}, el("span", { class: "name", text: name }), st, bar, detail));
    queue.push({ file, name, bar, st, detail });
  }
  pump();
}

function pump() {
  // Two at a time: enough to keep the link busy, few enough for a phone's memory.
  while (running < 2 && queue.length) {
    running++;
    upload(queue.shift()).finally(() => { running--; pump(); });
  }
}

async function upload({ file, name, bar, st, detail }) {
  let sent = 0;
  let hashed = 0;
  const total = Math.max(file.size * 2, 1);
  const show = () => { bar.value = (sent + hashed) / total; };
  st.textContent = "uploading";
  const [local, res] = await Promise.all([
    md5Of(file, (n) => { hashed = n; show(); }).catch(() => null),
    send(fileUrl(name), file, (n) => { sent = n; show(); }),
  ]);
  bar.value = 1;
  let body = null;
  try { body = JSON.parse(res.text); } catch (_) { /* not JSON */ }
  if (res.status !== 201 || !body) {
    st.textContent = "refused";
    st.className = "state bad";
    detail.textContent = body && body.error ? body.error
      : res.status ? `HTTP ${res.status}` : "The connection failed";
  } else if (local === body.id) {
    st.textContent = "Success";
    st.className = "state ok";
    detail.textContent = `MD5 ${body.id} computed by the server matches this browser's`;
  } else {
    st.textContent = "Fail";
    st.className = "state bad";
    detail.textContent = `the server computed ${body.id}, this browser ${local || "(could not read the file)"}`;
    // Tell the server, so its operator sees it (barge_md5_mismatches_total); best effort.
    if (local) {
      await fetch("/api/mismatch", {
        method: "POST", headers: writeHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ name: body.name }),
      }).catch(() => null);
    }
  }
  await refresh();
}

async function logIn(e) {
  e.preventDefault();
  const form = new FormData(e.target);
  const token = form.get("token");
  const body = token ? { token } : { user: form.get("user"), password: form.get("password") };
  say("Logging in…");
  const res = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  e.target.reset();
  if (!res.ok) { say(await errorText(res), true); return; }
  say("");
  await load();
}

async function logOut() {
  await fetch("/api/logout", { method: "POST" });
  state.files = [];
  await load();
}

function setup() {
  $("login-form").addEventListener("submit", logIn);
  $("logout").addEventListener("click", logOut);
  $("picker").addEventListener("change", (e) => { enqueue(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  document.addEventListener("dragover", (e) => {
    if (!state.me || !state.me.put) return;
    e.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (e) => {
    if (e.target === document.documentElement || e.target === drop) drop.classList.remove("over");
  });
  document.addEventListener("drop", (e) => {
    if (!state.me || !state.me.put) return;
    e.preventDefault();
    drop.classList.remove("over");
    enqueue(e.dataTransfer.files);
  });
  $("filter").addEventListener("input", (e) => { state.filter = e.target.value; render(); });
  const sortBy = (key) => () => {
    state.desc = state.sort === key ? !state.desc : false;
    state.sort = key;
    render();
  };
  $("sort-name").addEventListener("click", sortBy("name"));
  $("sort-size").addEventListener("click", sortBy("size"));
  document.addEventListener("click", go);
  window.addEventListener("popstate", render);
  load().catch((e) => say(`Could not load the share: ${e}`, true));
}

setup();
