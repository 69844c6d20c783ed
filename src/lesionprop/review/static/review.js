"use strict";
// The review page: items from /api/items, one shown at a time, decisions POSTed as they are made.
// Boxes from the API are in the label file's frame, 1-based: pixel column c of the slice spans
// c + 1 .. c + 2 there, so on a canvas drawn at `scale` px per slice pixel, x = (x_file - 1) * scale.
// Everything taken from the files (names, sources, messages) is set as text, never as markup.

const COLORS = { pseudo: "#f5c518", human: "#36d66b", edited: "#35c7ff" };
const MAIN_SIDE = 512, SMALL_SIDE = 224, MIN_DRAG_PX = 3;
const state = { items: [], index: 0, detail: null, window: "soft", images: [null, null, null], drag: null, token: 0 };

const $ = (id) => document.getElementById(id);
const say = (text) => { $("message").textContent = text; };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || String(response.status));
  return body;
}

// ------------------------------------------------------------------ the item list and the filter
async function buildFilter() {
  const all = await api("/api/items");
  const sources = [...new Set(all.map((it) => it.source))];
  for (const source of sources) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = source;
    box.checked = true;
    box.addEventListener("change", () => loadItems());
    label.append(box, " " + source);
    $("sources").append(label);
  }
  $("min-score").addEventListener("change", () => loadItems());
}

async function loadItems() {
  const keep = state.items[state.index] ? state.items[state.index].id : null;
  const sources = [...document.querySelectorAll("#sources input:checked")].map((e) => e.value);
  const params = new URLSearchParams({ source: sources.join(",") });
  const minScore = $("min-score").value.trim();
  if (minScore !== "") params.set("min_score", minScore);
  try {
    state.items = sources.length ? await api(`/api/items?${params}`) : [];
  } catch (err) {
    say(`filter not applied: ${err.message}`);
    return;
  }
  let index = state.items.findIndex((it) => it.id === keep);
  if (index < 0) index = Math.max(0, state.items.findIndex((it) => it.decision === null));
  await show(index);
}

function showProgress() {
  const n = state.items.length;
  const decided = state.items.filter((it) => it.decision !== null).length;
  $("progress").textContent = n ? `item ${state.index + 1} of ${n} · decided ${decided} of ${n}`
                                : "no item matches the filter";
}

// ------------------------------------------------------------------ one item
async function show(index) {
  const token = ++state.token;          // a later key press wins over a slower earlier one
  if (!state.items.length) {
    state.detail = null;
    showProgress();
    for (const id of ["file-name", "source", "score", "box", "decision"]) $(id).textContent = "";
    for (const id of ["key", "above", "below"]) $(id).getContext("2d").clearRect(0, 0, 9999, 9999);
    return;
  }
  state.index = Math.max(0, Math.min(index, state.items.length - 1));
  let detail;
  try {
    detail = await api(`/api/items/${state.items[state.index].id}`);
  } catch (err) {
    say(`cannot show item: ${err.message}`);
    return;
  }
  if (token !== state.token) return;
  state.detail = detail;
  state.items[state.index].decision = detail.decision;
  showInfo(detail);
  showProgress();
  loadImages(detail, token);
}

function showInfo(d) {
  const f = (v) => Number(v).toFixed(1);
  $("file-name").textContent = d.File_name;
  $("source").textContent = d.source;
  $("score").textContent = d.score === null ? "none" : d.score.toFixed(3);
  $("box").textContent = d.box.map(f).join(", ") + (d.edited_box ? `  →  ${d.edited_box.map(f).join(", ")}` : "");
  const decision = $("decision");
  decision.textContent = d.decision === null ? "not decided" : d.decision === "edit" ? "edit (box redrawn)" : d.decision;
  decision.className = d.decision || "";
  ["key-slice", "above-slice", "below-slice"].forEach((id, k) => {
    const slice = d.slices[[1, 0, 2][k]];
    $(id).textContent = slice === null ? "(no file)" : String(slice);
  });
}

function loadImages(d, token) {
  state.images = [null, null, null];
  draw();
  [-1, 0, 1].forEach((offset, k) => {
    if (d.slices[k] === null) return;
    const img = new Image();
    img.onload = () => { if (token === state.token) { state.images[k] = img; draw(); } };
    img.onerror = () => { if (token === state.token) say(`slice ${d.slices[k]} of ${d.series} could not be read`); };
    img.src = `/api/items/${d.id}/image?offset=${offset}&window=${state.window}`;
  });
}

// ------------------------------------------------------------------ drawing
function scaleOf(d, side) {
  return side / Math.max(d.image_size[0], d.image_size[1]);
}

function strokeBox(ctx, box, scale, color, dash) {
  const [x1, y1, x2, y2] = box.map((v) => (v - 1) * scale);
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.setLineDash(dash);
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.restore();
}

function drawView(canvas, img, d, main) {
  const scale = scaleOf(d, main ? MAIN_SIDE : SMALL_SIDE);
  canvas.width = Math.round(d.image_size[1] * scale);
  canvas.height = Math.round(d.image_size[0] * scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  // "item:window" once the slice is on screen (what a test or a screenshot waits for)
  canvas.dataset.drawn = img ? `${d.id}:${state.window}` : "";
  if (main) d.human_boxes.forEach((b) => strokeBox(ctx, b, scale, COLORS.human, []));
  strokeBox(ctx, d.box, scale, COLORS.pseudo, main && !d.edited_box ? [] : [5, 4]);
  if (d.edited_box) strokeBox(ctx, d.edited_box, scale, COLORS.edited, []);
  if (main && state.drag && state.drag.box) strokeBox(ctx, state.drag.box, scale, COLORS.edited, [2, 2]);
}

function draw() {
  const d = state.detail;
  if (!d) return;
  drawView($("above"), state.images[0], d, false);
  drawView($("key"), state.images[1], d, true);
  drawView($("below"), state.images[2], d, false);
}

// ------------------------------------------------------------------ deciding
async function decide(decision, box) {
  const item = state.items[state.index];
  if (!item || !state.detail) return;
  if (decision === "accept" && state.detail.decision === "edit") {
    // a redrawn box is already the decision: "accept" confirms it rather than undoing the drag
    say(`${item.File_name}: redrawn box kept`);
    await show(state.index + 1);
    return;
  }
  const body = decision === "edit" ? { decision, box } : { decision };
  try {
    const saved = await api(`/api/items/${item.id}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    item.decision = saved.decision;
    const done = { accept: "accepted", reject: "rejected", edit: "box redrawn" }[decision];
    say(`${saved.File_name}: ${done}`);
  } catch (err) {
    say(`not saved: ${err.message}`);
    return;
  }
  // a redrawn box stays on screen to be looked at; accept and reject move on
  const last = state.index === state.items.length - 1;
  await show(decision === "edit" || last ? state.index : state.index + 1);
  if (last && decision !== "edit") say(`${$("message").textContent} (last item)`);
}

function toFileFrame(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  const scale = scaleOf(state.detail, MAIN_SIDE);
  const x = Math.min(Math.max(event.clientX - rect.left, 0), canvas.width);
  const y = Math.min(Math.max(event.clientY - rect.top, 0), canvas.height);
  return { x, y, fx: Math.round((x / scale + 1) * 10) / 10, fy: Math.round((y / scale + 1) * 10) / 10 };
}

function startDrag(event) {
  if (!state.detail || event.button !== 0) return;
  event.preventDefault();
  state.drag = { start: toFileFrame($("key"), event), box: null };
}

function moveDrag(event) {
  if (!state.drag) return;
  const a = state.drag.start, b = toFileFrame($("key"), event);
  const big = Math.abs(b.x - a.x) >= MIN_DRAG_PX && Math.abs(b.y - a.y) >= MIN_DRAG_PX;
  state.drag.box = big ? [Math.min(a.fx, b.fx), Math.min(a.fy, b.fy), Math.max(a.fx, b.fx), Math.max(a.fy, b.fy)]
                       : null;
  draw();
}

async function endDrag(event) {
  if (!state.drag) return;
  moveDrag(event);
  const box = state.drag.box;
  state.drag = null;
  draw();
  if (box) await decide("edit", box);
}

// ------------------------------------------------------------------ keys and buttons
function setWindow(name) {
  state.window = name;
  document.querySelectorAll("#windows button").forEach((b) => b.classList.toggle("active", b.dataset.window === name));
  if (state.detail) loadImages(state.detail, state.token);
}

const KEYS = {
  a: () => decide("accept"), r: () => decide("reject"),
  n: () => show(state.index + 1), ArrowRight: () => show(state.index + 1),
  p: () => show(state.index - 1), ArrowLeft: () => show(state.index - 1),
  1: () => setWindow("soft"), 2: () => setWindow("lung"), 3: () => setWindow("bone"),
};

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) return;
  const action = KEYS[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

$("accept").addEventListener("click", () => decide("accept"));
$("reject").addEventListener("click", () => decide("reject"));
$("next").addEventListener("click", () => show(state.index + 1));
$("prev").addEventListener("click", () => show(state.index - 1));
document.querySelectorAll("#windows button").forEach((b) => b.addEventListener("click", () => setWindow(b.dataset.window)));
$("key").addEventListener("mousedown", startDrag);
window.addEventListener("mousemove", moveDrag);
window.addEventListener("mouseup", endDrag);
$("filter").addEventListener("submit", (event) => event.preventDefault());

(async () => {
  setWindow("soft");
  try {
    await buildFilter();
    await loadItems();
  } catch (err) {
    say(`cannot load the items: ${err.message}`);
  }
})();
