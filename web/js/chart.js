// SVG line charts: a faint raw series with its smoothed line over it, optional marked points (validation loss per
// epoch), the value range on the axes, and the value under the pointer on hover.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const [W, H, LEFT, BOTTOM] = [600, 170, 48, 18];

function node(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return el;
}

// Exponential moving average, debiased at the start as TensorBoard draws it.
export function smooth(points, weight = 0.8) {
  let last = 0;
  return points.map(([x, y], i) => {
    last = last * weight + (1 - weight) * y;
    return [x, last / (1 - weight ** (i + 1))];
  });
}

const fmt = (v) => (Math.abs(v) >= 1e-3 || v === 0 ? v.toPrecision(3) : v.toExponential(1));

export function lineChart(label, points, { marks = [], markLabel = "", smoothed = false } = {}) {
  const svg = node("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const clean = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const dots = marks.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  svg.setAttribute("aria-label", `${label}: ${clean.length} points` + (dots.length ? `, ${dots.length} ${markLabel}` : ""));
  const caption = h("p", { class: "muted" }, label);
  const all = [...clean, ...dots];
  if (!all.length) return h("figure", { style: "margin:0" }, svg, caption);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => LEFT + ((x - x0) / (x1 - x0 || 1)) * (W - LEFT - 8);
  const sy = (y) => H - BOTTOM - ((y - y0) / (y1 - y0 || 1)) * (H - BOTTOM - 8);
  const line = (series, cls) => node("polyline", { class: cls, fill: "none", "vector-effect": "non-scaling-stroke",
    points: series.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") });
  svg.append(node("line", { class: "axis", x1: LEFT, y1: 4, x2: LEFT, y2: H - BOTTOM }),
    node("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W - 4, y2: H - BOTTOM }));
  for (const [text, x, y, anchor] of [[fmt(y1), LEFT - 4, 12, "end"], [fmt(y0), LEFT - 4, H - BOTTOM, "end"],
    [`step ${x0}`, LEFT, H - 4, "start"], [`step ${x1}`, W - 4, H - 4, "end"]]) {
    const t = node("text", { x, y, "text-anchor": anchor, class: "tick" });
    t.textContent = text;
    svg.append(t);
  }
  const main = smoothed ? smooth(clean) : clean;
  if (smoothed && clean.length) svg.append(line(clean, "raw"));
  if (main.length) svg.append(line(main, "main"));
  for (const [x, y, note] of dots) {
    const dot = node("circle", { class: "mark", cx: sx(x), cy: sy(y), r: 4 });
    const title = node("title", {});
    title.textContent = `${note || markLabel}: ${fmt(y)} (step ${x})`;
    dot.append(title);
    svg.append(dot);
  }
  const readout = node("text", { x: W - 6, y: 14, "text-anchor": "end", class: "readout" });
  const cursor = node("line", { class: "cursor", y1: 4, y2: H - BOTTOM, visibility: "hidden" });
  svg.append(cursor, readout);
  svg.addEventListener("mousemove", (e) => {
    if (!main.length) return;
    const box = svg.getBoundingClientRect();
    const x = x0 + ((((e.clientX - box.left) / box.width) * W - LEFT) / (W - LEFT - 8)) * (x1 - x0);
    const near = main.reduce((a, b) => (Math.abs(b[0] - x) < Math.abs(a[0] - x) ? b : a));
    const raw = clean.find((p) => p[0] === near[0]);
    cursor.setAttribute("x1", sx(near[0]));
    cursor.setAttribute("x2", sx(near[0]));
    cursor.setAttribute("visibility", "visible");
    readout.textContent = `step ${near[0]}: ${fmt(raw ? raw[1] : near[1])}` + (smoothed ? ` (smoothed ${fmt(near[1])})` : "");
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); readout.textContent = ""; });
  caption.textContent = `${label}: ${fmt(y0)} – ${fmt(y1)} over steps ${x0}–${x1}` +
    (dots.length ? `; ${markLabel} ${dots.map((d) => fmt(d[1])).join(", ")}` : "");
  return h("figure", { style: "margin:0" }, svg, caption);
}
