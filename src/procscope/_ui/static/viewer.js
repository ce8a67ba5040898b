// procscope timeline viewer. No framework, no build step: plain DOM, one canvas, one SVG.
// Every recorded string reaches the page through textContent (el() below), never as HTML.
"use strict";

const S = {
  run: null, t0: 0n, duration: 1, lanes: [], laneById: new Map(), objects: [],
  v0: 0, v1: 1,            // the visible window, ns since t0
  data: null, f0: 0, f1: 0, fetchedSpan: 0,   // the last window fetched (wider than visible)
  cursor: null, selected: null, rowTop: new Map(), controller: null,
};
const $ = (id) => document.getElementById(id);
const LABEL_W = 230;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    // Styles through the CSSOM: the page's Content-Security-Policy blocks style attributes.
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, params, signal) {
  const query = new URLSearchParams();
  if (S.run) query.set("run", S.run);
  for (const [k, v] of Object.entries(params || {})) query.set(k, String(v));
  const response = await fetch(`/api/${path}?${query}`, { signal });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function status(text) { $("status").textContent = text; }

// ------------------------------------------------------------------ time formatting

function fmtDur(ns) {
  const a = Math.abs(ns);
  if (a < 1e3) return `${ns.toFixed(0)} ns`;
  if (a < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (a < 1e9) return `${(ns / 1e6).toFixed(a < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(a < 1e10 ? 3 : 1)} s`;
}

function clock(rel) {
  // Local time of day with microseconds: t0 is epoch ns as a string (BigInt keeps it exact).
  const ns = S.t0 + BigInt(Math.round(rel));
  const date = new Date(Number(ns / 1000000n));
  const micros = Number(ns % 1000000000n / 1000n);
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(date.getHours(), 2)}:${pad(date.getMinutes(), 2)}:${pad(date.getSeconds(), 2)}.${pad(micros, 6)}`;
}

// ------------------------------------------------------------------ geometry

function trackWidth() { return Math.max(100, $("scroller").clientWidth - LABEL_W); }
function xOf(t) { return (t - S.v0) / (S.v1 - S.v0) * trackWidth(); }
function tOf(x) { return S.v0 + x / trackWidth() * (S.v1 - S.v0); }

function setView(v0, v1) {
  const minSpan = 1000;  // 1 µs across the screen at most zoomed in
  let span = Math.max(minSpan, v1 - v0);
  const pad = S.duration * 0.02;
  span = Math.min(span, S.duration + 2 * pad);
  v0 = Math.max(-pad, Math.min(v0, S.duration + pad - span));
  S.v0 = v0; S.v1 = v0 + span;
  $("view-range").textContent = `${clock(S.v0)} – ${clock(S.v1)} (${fmtDur(S.v1 - S.v0)})`;
  scheduleDraw();
  scheduleFetch();
}

// ------------------------------------------------------------------ loading

async function loadRuns() {
  const body = await api("runs");
  const select = $("run");
  select.replaceChildren();
  for (const run of body.runs.slice().reverse()) {
    const id = String(run.run_id);
    const label = `${id.slice(0, 12)}${run.command ? " · " + run.command : ""}`;
    select.append(el("option", { value: id }, label));
  }
  if (body.runs.length > 1) select.append(el("option", { value: "all" }, "all runs"));
  S.run = body.default || (body.runs.length ? String(body.runs[body.runs.length - 1].run_id) : null);
  if (S.run) select.value = S.run;
  select.onchange = () => { S.run = select.value; loadRun(); };
}

async function loadRun() {
  status("loading…");
  document.body.dataset.ready = "0";
  const body = await api("overview");
  S.t0 = BigInt(body.t0_ns);
  S.duration = Math.max(1, body.duration);
  S.lanes = body.lanes;
  S.objects = body.objects;
  S.data = null; S.f0 = S.f1 = 0;
  S.laneById = new Map(S.lanes.map((l) => [l.id, l]));
  if (body.losses.length) {
    // Stored but not shown yet (a burst's span backlog, a flight recording being made
    // into spans) is not lost: said apart.
    const waits = (l) => l.reason === "not_indexed" || l.reason === "flight_staged";
    const sum = (list) => list.reduce((n, l) => n + l.count, 0);
    const lost = sum(body.losses.filter((l) => !waits(l)));
    const waiting = sum(body.losses.filter(waits));
    const parts = [];
    if (lost) parts.push(`${lost} spans lost`);
    if (waiting) parts.push(`${waiting} stored, not yet indexed (shown once the program indexes them)`);
    status(`recording incomplete: ${parts.join("; ")}`);
  } else status("");
  buildRows();
  setView(-S.duration * 0.01, S.duration * 1.01);
}

let fetchTimer = null;
function scheduleFetch() {
  const span = S.v1 - S.v0;
  const covered = S.data && S.v0 >= S.f0 && S.v1 <= S.f1;
  const sameZoom = S.fetchedSpan && span > S.fetchedSpan / 1.6 && span < S.fetchedSpan * 1.6;
  if (covered && sameZoom) return;
  clearTimeout(fetchTimer);
  fetchTimer = setTimeout(fetchWindow, S.data ? 60 : 0);
}

async function fetchWindow() {
  // One screen either side of the visible window: panning stays within what was fetched.
  const span = S.v1 - S.v0;
  const f0 = Math.max(0, Math.floor(S.v0 - span)), f1 = Math.ceil(S.v1 + span);
  if (S.controller) S.controller.abort();
  const controller = new AbortController();
  S.controller = controller;
  try {
    const body = await api("window", { start: f0, end: Math.max(f1, f0 + 1), px: Math.round(trackWidth() * 3 / 2) }, controller.signal);
    if (controller !== S.controller) return;
    for (const lane of body.new_lanes) addLane(lane);
    S.data = body; S.f0 = body.start; S.f1 = body.end; S.fetchedSpan = span;
    draw();
    document.body.dataset.ready = "1";
    document.body.dataset.mode = body.mode;
  } catch (error) {
    if (error.name !== "AbortError") status(`error: ${error.message}`);
  }
}

// ------------------------------------------------------------------ rows (lane labels are HTML text)

function addLane(lane) {
  if (S.laneById.has(lane.id)) return;
  S.laneById.set(lane.id, lane);
  const index = S.lanes.findIndex((l) => l.id === lane.parent);
  let at = index + 1;
  while (at < S.lanes.length && S.lanes[at].depth > (index >= 0 ? S.lanes[index].depth : -1)) at++;
  lane.depth = index >= 0 ? S.lanes[index].depth + 1 : 0;
  S.lanes.splice(at, 0, lane);
  buildRows();
}

function buildRows() {
  const rows = $("rows");
  rows.replaceChildren();
  for (const lane of S.lanes) {
    const label = el("div", { class: "label", role: "rowheader", title: lane.end_mark ? `${lane.label} (${lane.end_mark})` : lane.label,
      style: { paddingLeft: `${6 + lane.depth * 14}px` } },
      el("span", { class: "kind" }, lane.kind === "process" ? "" : lane.kind), lane.label,
      lane.end_mark ? el("span", { class: lane.error ? "end error" : "end" }, lane.end_mark) : null);
    rows.append(el("div", { class: `row ${lane.kind}`, "data-lane": lane.id, role: "row" }, label, el("div", { class: "track" })));
  }
  rows.append(el("div", { class: "row heading", role: "row" }, el("div", { class: "label", role: "rowheader" }, "Traced objects"), el("div", { class: "track" })));
  rows.append(el("div", { class: "row object", "data-object": "*events*", role: "row", hidden: true },
    el("div", { class: "label", role: "rowheader" }, "all span events"), el("div", { class: "track" })));
  for (const name of S.objects) {
    rows.append(el("div", { class: "row object", "data-object": name, role: "row" },
      el("div", { class: "label", role: "rowheader", title: name }, el("span", { class: "kind" }, "state"), name), el("div", { class: "track" })));
  }
  S.rowTop = new Map();
  for (const row of rows.children) {
    const key = row.dataset.lane || (row.dataset.object ? "o:" + row.dataset.object : null);
    if (key) S.rowTop.set(key, row);
  }
  draw();
}

function rowCenter(key) {
  const row = S.rowTop.get(key);
  return row ? row.offsetTop + row.offsetHeight / 2 : null;
}

function track(key) { const row = S.rowTop.get(key); return row ? row.lastChild : null; }

// ------------------------------------------------------------------ drawing

let drawPending = false;
function scheduleDraw() { if (!drawPending) { drawPending = true; requestAnimationFrame(() => { drawPending = false; draw(); }); } }

function draw() {
  for (const row of S.rowTop.values()) row.lastChild.replaceChildren();
  drawAxis();
  const eventsRow = S.rowTop.get("o:*events*");
  if (eventsRow) eventsRow.hidden = !(S.data && S.data.event_density);
  const W = trackWidth();
  const canvas = $("density"), rows = $("rows");
  canvas.width = W; canvas.height = rows.offsetHeight;
  canvas.style.width = `${W}px`; canvas.style.height = `${rows.offsetHeight}px`;
  const svg = $("overlay");
  svg.setAttribute("width", W); svg.setAttribute("height", rows.offsetHeight);
  $("arrows").replaceChildren();
  drawCursor();
  if (!S.data) return;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (S.data.density) drawDensity(ctx, S.data.density, (d) => d.lane);
  if (S.data.event_density) drawDensity(ctx, [{ lane: "o:*events*", counts: S.data.event_density }], (d) => d.lane);
  for (const lane of S.lanes) drawEndMark(lane);
  for (const span of S.data.spans) drawSpan(span, W);
  for (const mark of S.data.states) drawState(mark);
  for (const message of S.data.messages) drawArrow(message);
  markLive();
}

function drawAxis() {
  const ticks = $("ticks"); ticks.replaceChildren();
  const span = S.v1 - S.v0, W = trackWidth();
  const raw = span / Math.max(1, W / 110);
  const step = [1, 2, 5].map((m) => m * 10 ** Math.floor(Math.log10(raw))).concat([10 ** Math.ceil(Math.log10(raw))]).find((s) => s >= raw);
  for (let t = Math.ceil(S.v0 / step) * step; t <= S.v1; t += step) {
    ticks.append(el("div", { class: "tick", style: { left: `${xOf(t)}px` } }, `+${fmtDur(t)}`));
  }
}

function drawDensity(ctx, lanes, keyOf) {
  const n = S.data.buckets, width = (S.data.end - S.data.start) / n;
  let max = 1;
  for (const d of lanes) for (const c of d.counts) max = Math.max(max, c);
  for (const d of lanes) {
    const row = S.rowTop.get(keyOf(d)); if (!row) continue;
    const top = row.offsetTop + 2, h = row.offsetHeight - 4;
    ctx.fillStyle = keyOf(d).startsWith("o:") ? "#b7791f" : "#4f7fd9";
    d.counts.forEach((c, i) => {
      if (!c) return;
      const x0 = xOf(S.data.start + i * width), x1 = xOf(S.data.start + (i + 1) * width);
      if (x1 < 0 || x0 > ctx.canvas.width) return;
      const bar = Math.max(1, h * Math.log1p(c) / Math.log1p(max));
      ctx.fillRect(x0, top + h - bar, Math.max(1, x1 - x0), bar);
    });
  }
}

function drawSpan(span, W) {
  const t = track(span.lane); if (!t) return;
  const x0 = xOf(span.start), x1 = xOf(span.end);
  if (x1 < -2 || x0 > W + 2) return;
  const left = Math.max(-2, x0), right = Math.min(W + 2, x1);
  const lane = S.laneById.get(span.lane);
  const life = lane && lane.span === span.pk;
  const cls = ["bar", span.kind, life ? "life" : "", span.error ? "error" : "", span.flight ? "flight" : "", S.selected === span.pk ? "selected" : ""].join(" ");
  const bar = el("div", { class: cls, "data-pk": span.pk, title: `${span.name} · ${fmtDur(span.end - span.start)}`,
    style: { left: `${left}px`, width: `${Math.max(1, right - left)}px` } }, right - left > 40 ? span.name : null);
  bar.addEventListener("click", (e) => { e.stopPropagation(); showSpan(span.pk); });
  t.append(bar);
}

function drawEndMark(lane) {
  if (!lane.end_mark || lane.end === null || lane.end === undefined) return;
  const t = track(lane.id); if (!t) return;
  const x = xOf(lane.end); if (x < -6 || x > trackWidth() + 6) return;
  const mark = el("div", { class: lane.error ? "mark end error" : "mark end", "data-end": lane.id, title: `${lane.label}: ${lane.end_mark}`, style: { left: `${x}px` } }, lane.error ? "✕" : "■");
  mark.addEventListener("click", (e) => { e.stopPropagation(); if (lane.span) showSpan(lane.span); });
  t.append(mark);
}

function drawState(mark) {
  const t = track("o:" + mark.object); if (!t) return;
  const x = xOf(mark.t); if (x < -6 || x > trackWidth() + 6) return;
  const node = el("div", { class: `mark state ${mark.kind}`, "data-event": mark.event, title: `${mark.object}: ${mark.kind} at ${clock(mark.t)}`, style: { left: `${x}px` } }, "◆");
  node.addEventListener("click", (e) => { e.stopPropagation(); showSpan(mark.span, mark.event); });
  t.append(node);
}

function drawArrow(message) {
  const y0 = rowCenter(message.from); if (y0 === null) return;
  const x0 = xOf(message.sent);
  let x1, y1;
  if (message.to) { y1 = rowCenter(message.to); x1 = xOf(message.received); if (y1 === null) return; }
  else { y1 = y0 + 8; x1 = x0 + 24; }
  if (Math.max(x0, x1) < 0 || Math.min(x0, x1) > trackWidth()) return;
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: x0, y1: y0, x2: x1, y2: y1 })) line.setAttribute(k, v);
  line.setAttribute("class", message.to ? "arrow" : "arrow unreceived");
  line.setAttribute("marker-end", "url(#head)");
  line.dataset.id = message.id; line.dataset.from = message.from; line.dataset.to = message.to || "";
  const title = document.createElementNS(ns, "title");
  title.textContent = `${message.queue}: ${message.content ?? "(content not recorded)"}${message.to ? "" : " (not received)"}`;
  line.append(title);
  line.addEventListener("click", (e) => { e.stopPropagation(); showMessage(message); });
  $("arrows").append(line);
}

function drawCursor() {
  const line = $("cursor-line"), handle = $("cursor-handle");
  if (S.cursor === null) { line.style.display = handle.style.display = "none"; return; }
  const x = xOf(S.cursor);
  const visible = x >= 0 && x <= trackWidth();
  line.style.display = handle.style.display = visible ? "block" : "none";
  line.style.left = `${LABEL_W + x}px`; handle.style.left = `${LABEL_W + x}px`;
}

function markLive() {
  // Messages in flight at the cursor: sent before it, received after it (or never).
  for (const line of $("arrows").children) {
    const m = S.data.messages.find((x) => x.id === line.dataset.id);
    const live = S.cursor !== null && m && m.sent <= S.cursor && (m.received === null || m.received > S.cursor);
    line.classList.toggle("live", !!live);
    line.setAttribute("marker-end", live ? "url(#head-live)" : "url(#head)");
  }
}

// ------------------------------------------------------------------ side panel

function kvTable(pairs, changed) {
  const table = el("table", { class: "kv" });
  for (const [k, v] of pairs) {
    const cell = v instanceof Node ? v : (typeof v === "string" ? v : JSON.stringify(v));
    table.append(el("tr", { class: changed && changed.has(k) ? "changed" : null }, el("td", {}, k), el("td", {}, cell)));
  }
  return table;
}

async function showSpan(pk, eventPk) {
  S.selected = pk;
  const panel = $("details");
  let span;
  try { span = await api("span", { pk }); } catch (error) { status(`error: ${error.message}`); return; }
  const lane = S.laneById.get(span.lane);
  panel.replaceChildren(el("h2", {}, "Span ", el("span", { class: "span-name" }, span.name)),
    kvTable([["status", span.status + (span.status_description ? `: ${span.status_description}` : "")],
      ["start", `${clock(span.start)} (+${fmtDur(span.start)})`], ["duration", fmtDur(span.end - span.start)],
      ["kind", span.kind], ["lane", lane ? lane.label : span.lane], ["process", `${span.process_name ?? ""}:${span.pid}`],
      ["trace", span.trace_id], ["span id", span.span_id], ["parent", span.parent_span_id ?? "(root)"], ["scope", span.scope ?? ""]]),
    el("h3", {}, "Attributes"), kvTable(Object.entries(span.attributes)));
  for (const event of span.events) {
    const attrs = Object.assign({}, event.attributes);
    const stack = attrs["exception.stacktrace"]; delete attrs["exception.stacktrace"];
    panel.append(el("h3", { class: "event" }, `${event.name} at +${fmtDur(event.t)}`), kvTable(Object.entries(attrs)));
    if (stack) panel.append(el("pre", { class: "stack" }, stack));
  }
  for (const link of span.links) panel.append(el("h3", {}, "Link"), kvTable([["trace", link.trace_id], ["span", link.span_id], ...Object.entries(link.attributes)]));
  scheduleDraw();
}

async function showMessage(message) {
  const panel = $("details");
  const from = S.laneById.get(message.from), to = message.to ? S.laneById.get(message.to) : null;
  panel.replaceChildren(el("h2", {}, "Message on ", el("span", { class: "queue" }, message.queue ?? "?")),
    kvTable([["from", from ? from.label : message.from], ["to", to ? to.label : "(not received)"],
      ["sent", `${clock(message.sent)} (+${fmtDur(message.sent)})`],
      ["received", message.received === null ? "(not received)" : `${clock(message.received)} (+${fmtDur(message.received)})`],
      ["in flight", message.received === null ? "" : fmtDur(message.received - message.sent)],
      ["content", message.content ?? "(not recorded)"], ["message id", message.id]]),
    el("p", {}, el("button", { type: "button", onclick: () => showSpan(message.from_pk) }, "send span"), " ",
      message.to_pk ? el("button", { type: "button", onclick: () => showSpan(message.to_pk) }, "receive span") : null));
}

let cursorTimer = null, cursorBusy = false;
function setCursor(t) {
  S.cursor = Math.max(0, Math.min(S.duration, t));
  drawCursor();
  if (S.data) markLive();
  clearTimeout(cursorTimer);
  cursorTimer = setTimeout(fetchCursor, cursorBusy ? 120 : 30);
}

async function fetchCursor() {
  cursorBusy = true;
  const at = Math.round(S.cursor);
  try {
    const body = await api("cursor", { at, since: Math.max(0, Math.round(Math.min(S.v0, at - (S.v1 - S.v0)))) });
    if (Math.round(S.cursor) === at) renderCursor(body);
  } catch (error) { status(`error: ${error.message}`); }
  cursorBusy = false;
}

function renderCursor(body) {
  const panel = $("cursor-panel");
  panel.dataset.at = body.at;
  panel.replaceChildren(el("h2", {}, "At ", el("span", { id: "cursor-time" }, clock(body.at)), ` (+${fmtDur(body.at)})`));
  if (!body.objects.length) panel.append(el("p", { class: "hint" }, "No traced object has a recorded state yet at this instant."));
  for (const obj of body.objects) {
    const change = obj.last_change;
    const changed = new Set(change && change.kind !== "snapshot" ? change.fields.map((f) => f.field) : []);
    const box = el("div", { class: "obj-state", "data-object": obj.object },
      el("h3", {}, obj.object, el("span", { class: "kind" }, ` ${obj.class ?? ""}`)),
      kvTable(Object.entries(obj.fields).map(([k, v]) => [k, v === null ? "(not captured)" : v]), changed));
    if (change) {
      const what = change.kind === "snapshot" ? "snapshot" : `${change.kind} by ${change.method ?? "?"}`;
      box.append(el("p", { class: "hint" }, `last: ${what} at +${fmtDur(obj.changed_at)}`));
      const diff = el("ul", { class: "diff" });
      for (const f of change.kind === "snapshot" ? [] : change.fields) {
        diff.append(el("li", {}, `${f.field}: `, el("span", { class: "old" }, f.old ?? "?"), el("span", { class: "new" }, f.new ?? "?")));
      }
      for (const d of change.details) diff.append(el("li", {}, `${d.path}: `, el("span", { class: "old" }, d.old ?? "?"), el("span", { class: "new" }, d.new ?? "?")));
      if (diff.children.length) box.append(diff);
    }
    for (const note of obj.notes) box.append(el("p", { class: "hint" }, note));
    panel.append(box);
  }
  panel.append(el("h3", {}, `Messages in flight (${body.in_flight.length})`));
  const list = el("ul", { id: "in-flight" });
  for (const m of body.in_flight) {
    const from = S.laneById.get(m.from), to = m.to ? S.laneById.get(m.to) : null;
    list.append(el("li", {}, `${m.queue}: ${from ? from.label : m.from} → ${to ? to.label : "(never received)"} `,
      el("span", { class: "hint" }, m.content ?? "")));
  }
  panel.append(list);
}

async function search(text) {
  const box = $("results");
  if (!text) { box.hidden = true; for (const row of $("rows").children) row.classList.remove("match"); return; }
  const needle = text.toLowerCase();
  for (const row of $("rows").children) row.classList.toggle("match", row.firstChild.textContent.toLowerCase().includes(needle));
  const body = await api("search", { q: text });
  box.hidden = false;
  box.replaceChildren(el("h2", {}, `Spans named like “${text}” (${body.spans.length}${body.more ? "+" : ""})`));
  for (const span of body.spans) {
    const lane = S.laneById.get(span.lane);
    box.append(el("button", { type: "button", class: "result", onclick: () => {
      const pad = Math.max(1e5, (span.end - span.start) * 2);
      setView(span.start - pad, span.end + pad); showSpan(span.pk);
    } }, `${span.name} · ${lane ? lane.label : span.lane} · +${fmtDur(span.start)}`));
  }
}

// ------------------------------------------------------------------ interaction

function zoom(factor, atX) {
  const t = tOf(atX === undefined ? trackWidth() / 2 : atX);
  setView(t - (t - S.v0) * factor, t + (S.v1 - t) * factor);
}

function wire() {
  const scroller = $("scroller");
  scroller.addEventListener("wheel", (e) => {
    const x = e.clientX - scroller.getBoundingClientRect().left - LABEL_W;
    if (x < 0) return;
    if (Math.abs(e.deltaX) > Math.abs(e.deltaY) || e.shiftKey) {
      e.preventDefault();
      const d = e.deltaX || e.deltaY; const span = S.v1 - S.v0;
      setView(S.v0 + d / trackWidth() * span, S.v1 + d / trackWidth() * span);
    } else if (!e.altKey) {
      e.preventDefault(); zoom(Math.exp(e.deltaY * 0.002), x);
    }
  }, { passive: false });
  let drag = null;
  scroller.addEventListener("mousedown", (e) => {
    if (e.button !== 0 || e.clientX - scroller.getBoundingClientRect().left < LABEL_W) return;
    drag = { x: e.clientX, v0: S.v0, v1: S.v1, moved: false };
  });
  window.addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 3) { drag.moved = true; scroller.classList.add("dragging"); }
      if (drag.moved) { const dt = dx / trackWidth() * (drag.v1 - drag.v0); setView(drag.v0 - dt, drag.v1 - dt); }
    }
    if (cursorDrag) setCursor(tOf(e.clientX - $("axis").getBoundingClientRect().left - LABEL_W));
  });
  window.addEventListener("mouseup", () => { drag = null; cursorDrag = false; scroller.classList.remove("dragging"); });
  let cursorDrag = false;
  $("axis").addEventListener("mousedown", (e) => {
    const x = e.clientX - $("axis").getBoundingClientRect().left - LABEL_W;
    if (x < 0) return;
    cursorDrag = true; setCursor(tOf(x)); e.preventDefault();
  });
  $("zoom-in").onclick = () => zoom(0.5);
  $("zoom-out").onclick = () => zoom(2);
  $("fit").onclick = () => setView(-S.duration * 0.01, S.duration * 1.01);
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search($("search").value.trim()).catch((err) => status(`error: ${err.message}`)); });
  window.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const span = S.v1 - S.v0;
    if (e.key === "+" || e.key === "=") zoom(0.5);
    else if (e.key === "-") zoom(2);
    else if (e.key === "0") $("fit").click();
    else if (e.key === "ArrowLeft") setView(S.v0 - span / 5, S.v1 - span / 5);
    else if (e.key === "ArrowRight") setView(S.v0 + span / 5, S.v1 + span / 5);
  });
  window.addEventListener("resize", () => { scheduleDraw(); S.fetchedSpan = 0; scheduleFetch(); });
}

// The test suite and benchmarks drive the page through these.
window.procscope = { setCursor, setView, state: S, showSpan };

wire();
loadRuns().then(loadRun).catch((error) => status(`error: ${error.message}`));
