// A plain SVG line chart of [x, y] points with its range printed; enough for loss and learning rate.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

export function lineChart(label, points) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 160");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const clean = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  svg.setAttribute("aria-label", `${label}: ${clean.length} points`);
  const caption = h("p", { class: "muted" }, label);
  if (clean.length) {
    const xs = clean.map((p) => p[0]), ys = clean.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => 10 + ((x - x0) / (x1 - x0 || 1)) * 580, sy = (y) => 150 - ((y - y0) / (y1 - y0 || 1)) * 140;
    const path = document.createElementNS(NS, "polyline");
    path.setAttribute("points", clean.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "#3158d4");
    path.setAttribute("stroke-width", "2");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
    caption.textContent = `${label}: ${y0.toPrecision(3)} – ${y1.toPrecision(3)} over steps ${x0}–${x1}`;
  }
  return h("figure", { style: "margin:0" }, svg, caption);
}
