"""The review page: one HTML document with its script, served by :mod:`stylesift.review.server`.

Keyboard: ← → (or j k) move between cards, A or 1 gives the positive verdict, R or 2 the negative
one, S or 0 skips, N edits the note of the card, C shows or hides its 1:1 crop. Mouse: the buttons
on each card; the "1:1" button or a click on the thumbnail shows the centre of the original at its
own resolution beside the thumbnail (``/api/crop/ID``, fetched only then), to judge noise and focus.
A card turns green or red only when the server has answered that the verdict is saved. File names
are put in the page as text, never as markup.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stylesift review</title>
<link rel="icon" href="data:,">
<style>
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#dde2e8; --pos:#1b7f4b; --neg:#b3261e; --near:#b26a00; --sug:#3457b1; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:#f5f6f8; }
header { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:10px 20px;
         display:flex; flex-wrap:wrap; gap:10px 24px; align-items:center; }
h1 { font-size:18px; margin:0; }
.stat { display:flex; flex-direction:column; align-items:center; min-width:64px; }
.stat b { font-size:22px; font-variant-numeric:tabular-nums; } .stat span { color:var(--muted); font-size:11px; text-transform:uppercase; }
#model { font-size:13px; } #model.fresh { background:#e8f5ee; padding:2px 6px; border-radius:4px; }
#status { font-size:13px; color:var(--muted); min-height:1.2em; } #status.error { color:var(--neg); }
button { font:inherit; cursor:pointer; border:1px solid var(--line); background:#fff; border-radius:4px; padding:3px 8px; }
button:hover { background:#eef0f3; }
.keys { font-size:12px; color:var(--muted); } kbd { border:1px solid var(--line); border-radius:3px; padding:0 4px; background:#fafbfc; }
section { padding:4px 20px 12px; } h2 { font-size:16px; margin:12px 0 8px; } h2 small { font-weight:normal; color:var(--muted); font-size:13px; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(210px, 1fr)); gap:12px; }
.card { margin:0; background:#fff; border:1px solid var(--line); border-top:4px solid var(--pos); border-radius:6px; padding:8px; outline:none; }
.card.borderline { border-top-color:var(--near); } .card.suggestion { border-top-color:var(--sug); }
.card.current { box-shadow:0 0 0 3px #7aa7ff; }
.card.v-pos { background:#e8f5ee; } .card.v-neg { background:#fbeceb; }
.card img, .card .noimg { display:block; width:100%; height:180px; object-fit:contain; background:#eef0f3; border-radius:3px; }
.card .noimg { display:flex; align-items:center; justify-content:center; color:var(--muted); }
.meta { margin-top:6px; display:flex; flex-wrap:wrap; gap:2px 8px; align-items:baseline; font-size:12px; }
.score { font-weight:600; font-variant-numeric:tabular-nums; font-size:14px; }
.name { flex-basis:100%; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.nearest, .group { flex-basis:100%; color:var(--muted); }
.actions { display:flex; gap:4px; margin-top:6px; } .actions button { flex:1; }
.actions .pos { color:var(--pos); } .actions .neg { color:var(--neg); }
.note { width:100%; margin-top:4px; font:inherit; font-size:12px; padding:2px 4px; border:1px solid var(--line); border-radius:3px; }
.saved { font-size:12px; margin-top:4px; min-height:1.2em; } .saved.error { color:var(--neg); }
details.members { font-size:12px; color:var(--muted); margin-top:4px; } details.members img { width:64px; height:64px; object-fit:cover; display:inline-block; margin:2px; }
.empty { color:var(--muted); }
.pair { position:relative; display:flex; gap:8px; align-items:flex-start; }
.pair .thumb { cursor:zoom-in; }
.pair .zoom { position:absolute; top:4px; left:4px; padding:0 5px; font-size:11px; opacity:.9; }
.pair .zoom[aria-pressed="true"] { background:#7aa7ff; color:#fff; }
.card.with-crop { grid-column:1 / -1; }
.card.with-crop .pair .thumb, .card.with-crop .pair .noimg { width:300px; flex:none; cursor:zoom-out; }
.cropbox { overflow:auto; max-width:100%; min-width:0; }
.card img.crop { width:auto; height:auto; max-width:none; object-fit:none; background:none; image-rendering:pixelated; }
.nocrop { color:var(--muted); font-size:12px; padding:8px; }
</style></head>
<body>
<header>
  <h1>stylesift review</h1>
  <div class="stat"><b id="t-verdicts">0</b><span>verdicts</span></div>
  <div class="stat"><b id="t-accepted">0</b><span>accepted</span></div>
  <div class="stat"><b id="t-rejected">0</b><span>rejected</span></div>
  <div class="stat"><b id="t-precision">–</b><span>precision of picks</span></div>
  <div><div id="model"></div><button id="retrain" type="button">Retrain now</button> <span id="status"></span></div>
  <div class="keys"><kbd>←</kbd><kbd>→</kbd> move · <kbd>A</kbd> <span id="k-pos"></span> · <kbd>R</kbd> <span id="k-neg"></span> · <kbd>S</kbd> skip · <kbd>N</kbd> note · <kbd>C</kbd> 1:1 crop</div>
</header>
<main id="main"><p class="empty">Loading…</p></main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
let state = null, version = null, order = [], current = 0, pending = 0;

function api(path, options) {
  options = options || {};
  options.headers = Object.assign({"X-Token": token, "Content-Type": "application/json"}, options.headers || {});
  return fetch(path, options).then(r => r.json().then(body => ({ok: r.ok, status: r.status, body: body})));
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function setStatus(text, error) {
  const s = document.getElementById("status");
  s.textContent = text; s.className = error ? "error" : "";
}
function imgFor(id) {
  const img = el("img");
  img.alt = "image " + id; img.loading = "lazy";
  img.src = "/img/" + id + "?token=" + encodeURIComponent(token);
  img.onerror = () => { const d = el("div", "noimg", "no preview"); img.replaceWith(d); };
  return img;
}
function card(item, kind, rank) {
  const f = el("figure", "card " + kind);
  f.tabIndex = -1; f.dataset.id = item.id;
  const pair = el("div", "pair"), thumb = imgFor(item.id);
  thumb.classList.add("thumb"); thumb.addEventListener("click", () => toggleCrop(item.id));
  const zoom = el("button", "zoom", "1:1"); zoom.type = "button"; zoom.setAttribute("aria-pressed", "false");
  zoom.title = "the centre of the original at its own resolution (C)"; zoom.onclick = () => toggleCrop(item.id);
  pair.append(thumb, zoom);
  f.appendChild(pair);
  const meta = el("div", "meta");
  meta.appendChild(el("span", "rank", "#" + rank));
  meta.appendChild(el("span", "score", item.score.toFixed(3)));
  const name = el("span", "name", item.name); name.title = item.name; meta.appendChild(name);
  if (item.nearest) meta.appendChild(el("span", "nearest", "nearest positive: " + item.nearest.name + " (" + item.nearest.similarity.toFixed(2) + ")"));
  if (item.like !== undefined) meta.appendChild(el("span", "nearest like", "like #" + item.like + " (" + item.similarity.toFixed(2) + ")"));
  if (item.seen_before) meta.appendChild(el("span", "nearest seen", "seen before: " + item.seen_before.label + " on " + item.seen_before.date));
  f.appendChild(meta);
  const members = state.members[String(item.group)] || [];
  if (members.length) {
    const d = el("details", "members");
    d.appendChild(el("summary", null, "group of " + (members.length + 1) + ": " + members.length + " near-duplicate" + (members.length === 1 ? "" : "s") + " behind this card"));
    members.slice(0, 8).forEach(id => { const i = imgFor(id); i.title = state.items[id].name; d.appendChild(i); });
    f.appendChild(d);
  }
  const actions = el("div", "actions");
  const pos = el("button", "pos", "✓ " + state.labels.positive); pos.type = "button"; pos.onclick = () => give(item.id, "positive");
  const neg = el("button", "neg", "✗ " + state.labels.negative); neg.type = "button"; neg.onclick = () => give(item.id, "negative");
  const skip = el("button", "skip", "skip"); skip.type = "button"; skip.onclick = () => give(item.id, "skip");
  actions.append(pos, neg, skip);
  if (item.like === undefined) {
    const more = el("button", "more", "more like this"); more.type = "button"; more.onclick = () => moreLike(item.id);
    actions.append(more);
  }
  f.appendChild(actions);
  const note = el("input", "note"); note.placeholder = "note (optional)"; note.maxLength = 2000;
  note.addEventListener("keydown", ev => { ev.stopPropagation(); if (ev.key === "Enter" || ev.key === "Escape") note.blur(); });
  f.appendChild(note);
  f.appendChild(el("div", "saved"));
  f.addEventListener("click", ev => { if (ev.target.tagName !== "INPUT") focusCard(order.indexOf(item.id)); });
  return f;
}
function toggleCrop(id) {
  // The crop is fetched the first time it is asked for (a full-resolution decode on the server), then only shown or hidden.
  const f = document.querySelector('.card[data-id="' + id + '"]');
  if (!f) return;
  const open = !f.classList.contains("with-crop");
  f.classList.toggle("with-crop", open);
  f.querySelector("button.zoom").setAttribute("aria-pressed", String(open));
  let box = f.querySelector(".cropbox");
  if (!box && open) {
    box = el("div", "cropbox");
    const img = el("img", "crop");
    img.alt = "1:1 centre crop of " + state.items[id].name;
    img.onerror = () => img.replaceWith(el("div", "nocrop", "no 1:1 crop: the file moved or changed since scoring"));
    img.src = "/api/crop/" + id + "?token=" + encodeURIComponent(token);
    box.appendChild(img);
    f.querySelector(".pair").appendChild(box);
  }
  if (box) box.hidden = !open;
  if (open) f.scrollIntoView({block: "nearest"});
}
function markVerdict(id) {
  const f = document.querySelector('.card[data-id="' + id + '"]');
  if (!f) return;
  const v = state.items[id].verdict;
  f.classList.toggle("v-pos", !!(v && v.positive));
  f.classList.toggle("v-neg", !!(v && !v.positive));
  const s = f.querySelector(".saved");
  if (v && !s.classList.contains("error")) s.textContent = "saved: " + v.label + " (" + v.reviewer + (v.note ? ", “" + v.note + "”" : "") + ")";
}
function moreLike(id) {
  setStatus("looking for stored images like #" + id + "…");
  api("/api/more/" + id, {method: "POST"}).then(res => {
    if (!res.ok) { setStatus("more like this: " + (res.body.error || res.status), true); return; }
    refresh().then(() => { render(); setStatus(res.body.added.length + " stored images like #" + id + " added below"); });
  });
}
function render() {
  const main = document.getElementById("main");
  main.replaceChildren();
  order = [];
  const sections = [["picks", "Picks", "selected by the model, one card per near-duplicate group"],
                    ["suggestions", "Suggestions", "unlabelled images whose verdict would teach the model most"],
                    ["borderline", "Borderline", "the best-scoring images below the cut"]];
  let rank = 1;
  sections.forEach(([key, title, sub]) => {
    const sec = el("section"); sec.id = key;
    const h = el("h2", null, title + " "); h.appendChild(el("small", null, state.sections[key].length + " · " + sub)); sec.appendChild(h);
    const grid = el("div", "grid");
    state.sections[key].forEach(id => { grid.appendChild(card(state.items[id], key === "picks" ? "pick" : key.replace(/s$/, ""), rank++)); order.push(id); });
    if (!state.sections[key].length) sec.appendChild(el("p", "empty", "none"));
    sec.appendChild(grid); main.appendChild(sec);
  });
  Object.keys(state.more || {}).forEach(origin => {
    const sec = el("section", "more"); sec.id = "more-" + origin;
    const ids = state.more[origin];
    const h = el("h2", null, "More like " + state.items[origin].name + " "); h.appendChild(el("small", null, ids.length + " · unlabelled stored images, most similar first")); sec.appendChild(h);
    const grid = el("div", "grid");
    ids.forEach(id => { grid.appendChild(card(state.items[id], "more", rank++)); order.push(id); });
    if (!ids.length) sec.appendChild(el("p", "empty", "no unlabelled stored image is left to show"));
    sec.appendChild(grid); main.appendChild(sec);
  });
  order.forEach(markVerdict);
  focusCard(Math.min(current, order.length - 1), true);
}
function updateHeader() {
  const t = state.tally;
  document.getElementById("t-verdicts").textContent = t.verdicts;
  document.getElementById("t-accepted").textContent = t.accepted;
  document.getElementById("t-rejected").textContent = t.rejected;
  document.getElementById("t-precision").textContent = t.precision === null ? "–" : t.precision.toFixed(2);
  document.getElementById("k-pos").textContent = state.labels.positive;
  document.getElementById("k-neg").textContent = state.labels.negative;
  const m = document.getElementById("model");
  m.textContent = "model in use: " + state.model.file + " (" + state.model.method + ", since " + new Date(state.model.since * 1000).toLocaleTimeString() + ")";
  m.dataset.version = state.model.version;
  const r = state.retraining;
  if (r && r.error) setStatus("retraining failed, the previous model stays in use: " + r.error, true);
  else if (r && !r.done) setStatus("retraining in the background…");
}
function refresh() {
  return api("/api/state").then(res => {
    if (!res.ok) { setStatus(res.body.error || "the server refused the request", true); return; }
    const fresh = version !== null && res.body.model.version !== version;
    state = res.body;
    updateHeader();
    if (version === null || fresh) {
      render();
      if (fresh) { document.getElementById("model").classList.add("fresh"); setStatus("new model in use: " + state.model.file); }
    } else {
      order.forEach(markVerdict);
    }
    version = state.model.version;
  }).catch(() => setStatus("the review server does not answer; verdicts cannot be saved until it is back", true));
}
function focusCard(i, quiet) {
  if (!order.length) return;
  current = Math.max(0, Math.min(i, order.length - 1));
  document.querySelectorAll(".card.current").forEach(c => c.classList.remove("current"));
  const f = document.querySelector('.card[data-id="' + order[current] + '"]');
  if (f) { f.classList.add("current"); if (!quiet) f.scrollIntoView({block: "nearest"}); f.focus({preventScroll: !!quiet}); }
}
function give(id, verdict) {
  const f = document.querySelector('.card[data-id="' + id + '"]');
  const s = f.querySelector(".saved");
  const note = f.querySelector(".note").value;
  s.classList.remove("error");
  if (verdict === "skip") { s.textContent = "skipped (no verdict)"; focusCard(order.indexOf(id) + 1); return; }
  s.textContent = "saving…"; pending++;
  const attempt = n => api("/api/verdict", {method: "POST", body: JSON.stringify({id: id, verdict: verdict, note: note})}).then(res => {
    if (res.status === 503 && n < 30) {  // the store is busy (a long extract writes it): not saved yet, try again
      s.textContent = "NOT saved yet: the store is busy, retrying (" + (n + 1) + ")…";
      return new Promise(ok => setTimeout(ok, 2000)).then(() => attempt(n + 1));
    }
    if (!res.ok) { s.textContent = "NOT saved: " + (res.body.error || res.status); s.classList.add("error"); return; }
    state.items[id].verdict = {label: res.body.label, positive: verdict === "positive", reviewer: state.reviewer, note: note, time: res.body.time, this_round: true};
    markVerdict(id);
    return refresh();
  });
  attempt(0).catch(() => { s.textContent = "NOT saved: the server does not answer"; s.classList.add("error"); })
    .finally(() => { pending--; });
  focusCard(order.indexOf(id) + 1);
}
document.addEventListener("keydown", ev => {
  if (!state || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const id = order[current];
  const k = ev.key.toLowerCase();
  if (k === "arrowright" || k === "j") focusCard(current + 1);
  else if (k === "arrowleft" || k === "k") focusCard(current - 1);
  else if (k === "a" || k === "1") give(id, "positive");
  else if (k === "r" || k === "2") give(id, "negative");
  else if (k === "s" || k === "0") give(id, "skip");
  else if (k === "c") toggleCrop(id);
  else if (k === "n") { const f = document.querySelector('.card[data-id="' + id + '"] .note'); if (f) f.focus(); }
  else return;
  ev.preventDefault();
});
document.getElementById("retrain").onclick = () => api("/api/retrain", {method: "POST"}).then(res => {
  if (res.ok && res.body.started) setStatus("retraining in the background…");
  else if (res.ok) setStatus("a retrain is running already");
  else setStatus(res.body.error || "retrain refused", true);
});
window.addEventListener("beforeunload", ev => { if (pending) { ev.preventDefault(); ev.returnValue = ""; } });
refresh();
setInterval(refresh, 3000);
</script>
</body></html>
"""
