// dragkit's points widget for ComfyUI: shows the drag node's input image and lets the user click handle → target
// pairs. The pairs live in the node's "points" STRING widget as {"handles": [[x, y], ...], "targets": [[x, y], ...]}
// (pixels of the input image), so a saved workflow or an API prompt carries them as plain JSON; a pending handle
// (clicked, no target yet) is shown but never written. Typing JSON into the widget redraws the points.
//
// The image comes from the node feeding "image" (a Load Image node's file, or any node's preview), and after a run
// from the drag node's own ui message ("dragkit_input": the input image as a data URL with its size).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "DragkitDrag";
const HANDLE = "#e8443a";
const TARGET = "#3a7be8";

function parsePoints(text) {
  // {handles, targets} of the widget's JSON, or null when it is not a points JSON (left as typed)
  try {
    const data = JSON.parse(text);
    const ok = (a) => Array.isArray(a) && a.every((p) => Array.isArray(p) && p.length === 2 && p.every(Number.isFinite));
    if (data && ok(data.handles) && ok(data.targets)) return { handles: data.handles, targets: data.targets };
  } catch (e) {
    /* not JSON: shown as such */
  }
  return null;
}

function linkOf(graph, id) {
  const links = graph?.links;
  if (!links || id == null) return null;
  return typeof links.get === "function" ? links.get(id) : links[id];
}

function upstreamImage(node) {
  // {src, width?, height?} of the node connected to "image", or null
  const input = node.inputs?.find((i) => i.name === "image");
  const link = linkOf(node.graph ?? app.graph, input?.link);
  if (!link) return null;
  const origin = (node.graph ?? app.graph).getNodeById(link.origin_id);
  if (!origin) return null;
  if (origin.imgs?.length) return { src: origin.imgs[0].src };
  const file = origin.widgets?.find((w) => w.name === "image")?.value;
  if (typeof file === "string" && file) {
    const slash = file.lastIndexOf("/");
    const params = new URLSearchParams({ filename: file.slice(slash + 1), subfolder: slash < 0 ? "" : file.slice(0, slash), type: "input" });
    return { src: api.apiURL(`/view?${params}`) };
  }
  return null;
}

function setupNode(node) {
  const pointsWidget = node.widgets.find((w) => w.name === "points");
  const root = document.createElement("div");
  root.className = "dragkit-points";
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;font:12px sans-serif;color:#ddd";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "width:100%;cursor:crosshair;background:#222;border-radius:4px";
  canvas.width = 256;
  canvas.height = 160;
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:6px;align-items:center";
  const clear = document.createElement("button");
  clear.textContent = "Clear points";
  clear.className = "dragkit-clear";
  const undo = document.createElement("button");
  undo.textContent = "Undo";
  undo.className = "dragkit-undo";
  const status = document.createElement("span");
  status.className = "dragkit-status";
  bar.append(clear, undo, status);
  root.append(canvas, bar);

  const state = { img: null, src: null, width: 0, height: 0, pending: null, fromRun: null };

  const current = () => parsePoints(pointsWidget.value) ?? { handles: [], targets: [], invalid: true };

  function write(points) {
    pointsWidget.value = JSON.stringify({ handles: points.handles, targets: points.targets });
    pointsWidget.callback?.(pointsWidget.value);
    draw();
  }

  function draw() {
    const ctx = canvas.getContext("2d");
    const pts = current();
    if (state.img && state.width) {
      // drawn in image pixels, at a resolution that keeps small images' points crisp
      const k = Math.max(1, Math.ceil(512 / Math.max(state.width, state.height)));
      canvas.width = state.width * k;
      canvas.height = state.height * k;
      ctx.setTransform(k, 0, 0, k, 0, 0);
      ctx.imageSmoothingEnabled = k === 1;
      ctx.drawImage(state.img, 0, 0, state.width, state.height);
    } else {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#222";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.fillStyle = "#aaa";
      ctx.font = "12px sans-serif";
      ctx.fillText("connect a Load Image node (or run once)", 8, 20);
    }
    const r = Math.max(state.width, state.height, 64) / 80 + 0.8;
    const dot = (p, colour) => {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(p[0] + 0.5, p[1] + 0.5, r, 0, 2 * Math.PI);
      ctx.fill();
    };
    pts.handles.forEach((h, i) => {
      const t = pts.targets[i];
      if (t) {
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = Math.max(1, r / 2);
        ctx.beginPath();
        ctx.moveTo(h[0] + 0.5, h[1] + 0.5);
        ctx.lineTo(t[0] + 0.5, t[1] + 0.5);
        ctx.stroke();
        dot(t, TARGET);
      }
      dot(h, HANDLE);
    });
    if (state.pending) dot(state.pending, HANDLE);
    const n = Math.min(pts.handles.length, pts.targets.length);
    status.textContent = pts.invalid
      ? "points: not a points JSON (fix or clear)"
      : `${n} pair${n === 1 ? "" : "s"}${state.pending ? ", click the target" : ""}` + (state.width ? ` · ${state.width}×${state.height}` : "");
  }

  function show(source) {
    if (!source || source.src === state.src) return;
    state.src = source.src;
    const img = new Image();
    img.onload = () => {
      state.img = img;
      state.width = source.width ?? img.naturalWidth;
      state.height = source.height ?? img.naturalHeight;
      node.setDirtyCanvas?.(true, true);
      draw();
    };
    img.src = source.src;
  }

  function refresh() {
    show(upstreamImage(node) ?? state.fromRun);
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    event.stopPropagation();
    if (!state.width) return;
    const rect = canvas.getBoundingClientRect();
    const clamp = (v, hi) => Math.min(hi - 1, Math.max(0, v));
    const x = clamp(Math.floor(((event.clientX - rect.left) / rect.width) * state.width), state.width);
    const y = clamp(Math.floor(((event.clientY - rect.top) / rect.height) * state.height), state.height);
    const pts = current();
    if (pts.invalid) return;
    if (!state.pending) {
      state.pending = [x, y];
      draw();
      return;
    }
    const handle = state.pending;
    state.pending = null;
    write({ handles: [...pts.handles, handle], targets: [...pts.targets, [x, y]] });
  });
  clear.addEventListener("click", () => {
    state.pending = null;
    write({ handles: [], targets: [] });
  });
  undo.addEventListener("click", () => {
    if (state.pending) {
      state.pending = null;
      draw();
      return;
    }
    const pts = current();
    if (!pts.invalid) write({ handles: pts.handles.slice(0, -1), targets: pts.targets.slice(0, -1) });
  });

  // typed JSON redraws; the widget keeps its value as typed
  const typed = pointsWidget.callback;
  pointsWidget.callback = function (value) {
    typed?.apply(this, arguments);
    draw();
  };
  const input = pointsWidget.inputEl ?? pointsWidget.element;
  input?.addEventListener?.("input", () => draw());

  node.addDOMWidget("dragkit_canvas", "dragkit_points", root, { serialize: false, hideOnZoom: false });
  node.dragkitPoints = { refresh, draw, state, show };

  const connections = node.onConnectionsChange;
  node.onConnectionsChange = function () {
    connections?.apply(this, arguments);
    state.fromRun = null;
    refresh();
  };
  const foreground = node.onDrawForeground;
  node.onDrawForeground = function () {
    foreground?.apply(this, arguments);
    refresh(); // cheap: reloads only when the source changed (a new file picked in Load Image)
  };
  const executed = node.onExecuted;
  node.onExecuted = function (message) {
    executed?.apply(this, arguments);
    const shown = message?.dragkit_input?.[0];
    if (shown?.image) {
      state.fromRun = { src: shown.image, width: shown.width, height: shown.height };
      refresh();
    }
  };
  draw();
  refresh();
}

app.registerExtension({
  name: "dragkit.points",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      setupNode(this);
      return r;
    };
  },
});
