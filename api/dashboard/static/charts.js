// Time-series charts drawn as SVG by our own code: bars (optionally stacked) or lines, an axis,
// a light grid, a legend, and a native tooltip per time slot. No library, nothing fetched.

import { clock, h } from "./util.js";

const MARGIN = { left: 54, right: 12, top: 10, bottom: 24 };

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (factor * power >= value) return factor * power;
  }
  return 10 * power;
}

function peak(series, stacked) {
  let top = 0;
  const length = series.length ? series[0].values.length : 0;
  for (let i = 0; i < length; i++) {
    const values = series.map((s) => s.values[i] || 0);
    top = Math.max(top, stacked ? values.reduce((a, b) => a + b, 0) : Math.max(...values));
  }
  return top;
}

// width: the drawing's own units (text keeps its size when the panel is as wide); integer: counts, so the
// axis is cut in whole numbers.
export function timeChart({ times, series, kind = "line", stacked = false, format = String, height = 190, max,
  label = (t) => clock(t), width = 640, integer = false }) {
  const H = height;
  const WIDTH = width;
  const inner = { w: WIDTH - MARGIN.left - MARGIN.right, h: H - MARGIN.top - MARGIN.bottom };
  const count = times.length;
  let top = max ?? niceMax(peak(series, stacked && kind === "bar"));
  if (integer) top = Math.max(4, Math.ceil(top / 4) * 4);
  const y = (v) => MARGIN.top + inner.h - (Math.min(v, top) / top) * inner.h;
  const slot = inner.w / Math.max(1, count);
  const x = (i) => MARGIN.left + i * slot;
  const svg = h("svg", { viewBox: `0 0 ${WIDTH} ${H}`, role: "img" });

  const grid = h("g", { class: "grid" });
  const axis = h("g", { class: "axis" });
  for (let tick = 0; tick <= 4; tick++) {
    const value = (top * tick) / 4;
    grid.append(h("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
    axis.append(h("text", { x: MARGIN.left - 6, y: y(value) + 3, "text-anchor": "end" }, format(value)));
  }
  const every = Math.max(1, Math.ceil(count / 6));
  for (let i = 0; i < count; i += every) {
    axis.append(h("text", { x: x(i) + slot / 2, y: H - 6, "text-anchor": "middle" }, label(times[i])));
  }
  svg.append(grid, axis);

  if (kind === "bar") {
    const bars = h("g", {});
    for (let i = 0; i < count; i++) {
      let base = 0;
      series.forEach((s, index) => {
        const value = s.values[i] || 0;
        if (value <= 0) return;
        const from = stacked ? base : 0;
        const width = stacked ? Math.max(1, slot - 2) : Math.max(1, (slot - 2) / series.length);
        const left = stacked ? x(i) + 1 : x(i) + 1 + index * width;
        bars.append(h("rect", { x: left, y: y(from + value), width, height: Math.max(0.5, y(from) - y(from + value)),
          fill: s.color, rx: 1 }));
        if (stacked) base += value;
      });
    }
    svg.append(bars);
  } else {
    for (const s of series) {
      let points = [];
      const flush = () => {
        if (points.length === 1) {
          const [px, py] = points[0].split(",");
          svg.append(h("circle", { cx: px, cy: py, r: 2.5, fill: s.color }));
        } else if (points.length > 1) {
          svg.append(h("polyline", { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": 2,
            "stroke-linejoin": "round", "stroke-linecap": "round" }));
        }
        points = [];
      };
      s.values.forEach((value, i) => {
        if (value === null || value === undefined) flush();
        else points.push(`${(x(i) + slot / 2).toFixed(1)},${y(value).toFixed(1)}`);
      });
      flush();
    }
  }
  svg.append(h("line", { class: "baseline", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0) }));

  const hover = h("g", {});
  for (let i = 0; i < count; i++) {
    const lines = series.map((s) => `${s.name}: ${s.values[i] === null || s.values[i] === undefined ? "—" :
      format(s.values[i])}`);
    hover.append(h("rect", { class: "hover", x: x(i), y: MARGIN.top, width: slot, height: inner.h },
      h("title", {}, [label(times[i]), ...lines].join("\n"))));
  }
  svg.append(hover);

  const legend = h("div", { class: "legend" }, series.map((s) => {
    const swatch = h("i");
    swatch.style.background = s.color;
    return h("span", {}, swatch, s.name);
  }));
  return h("div", { class: "chart" }, legend, svg);
}

export const COLORS = { ok: "#1a9e5b", warn: "#e0a100", bad: "#d1343c", blue: "#1f6feb", violet: "#7c5cd6",
  teal: "#0e9aa7", grey: "#98a2b3" };
