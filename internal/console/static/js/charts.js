// Charts drawn as inline SVG: stacked columns over days and stacked bars by model. Each
// mark has a <title>, which the browser shows as its tooltip.
import { h, svg } from "./ui.js";

// niceStep is a round step (1, 2 or 5 × 10^n) giving about n steps up to max.
function niceStep(max, n) {
  const raw = max / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

function legend(series) {
  if (series.length < 2) return null;
  return h("div", { class: "legend" }, series.map((s, i) => h("span", {}, h("i", { class: "sw" + (i + 1) }), s.name)));
}

// chartFrame sums each label's stack and makes the chart's box: max is the largest stack;
// with nothing to draw the box already says so.
function chartFrame(labels, series, id) {
  const totals = labels.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = Math.max(...totals, 0);
  const wrap = h("div", { class: "chart-wrap", id });
  if (max <= 0) wrap.append(h("div", { class: "chart-empty" }, "No usage in this period."));
  return { max, totals, wrap };
}

// columns draws stacked columns: labels along x (days), one stack per label, series
// ({name, values}) stacked bottom up; format renders a value (axis and tooltips).
export function columns({ labels, series, format, id, shortLabel }) {
  const W = 560, H = 230, L = 62, R = 8, T = 12, B = 26;
  const { max, wrap } = chartFrame(labels, series, id);
  if (max <= 0) return wrap;
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step) * step;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const bw = (W - L - R) / labels.length;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": series.map((s) => s.name).join(", ") });
  for (let v = 0; v <= top + step / 2; v += step) {
    chart.append(svg("line", { class: v === 0 ? "axis" : "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const every = Math.ceil(labels.length / 10);
  labels.forEach((label, i) => {
    const x = L + i * bw;
    let base = 0;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (v > 0) {
        const y0 = y(base), y1 = y(base + v);
        chart.append(svg("rect", { class: "bar fill" + (si + 1), x: x + bw * 0.15, width: Math.max(1, bw * 0.7),
          y: y1, height: Math.max(1, y0 - y1), rx: 2 }, svg("title", {}, `${label} · ${s.name}: ${format(v)}`)));
      }
      base += v;
    });
    if (i % every === 0) {
      chart.append(svg("text", { x: x + bw / 2, y: H - 9, "text-anchor": "middle" }, shortLabel ? shortLabel(label) : label));
    }
  });
  wrap.append(chart);
  const lg = legend(series);
  if (lg) wrap.append(lg);
  return wrap;
}

// bars draws horizontal stacked bars, one row per label (models), with its total at the end.
export function bars({ labels, series, format, id }) {
  const rowH = 30, L = 150, R = 84, T = 6, W = 560;
  const H = T * 2 + rowH * labels.length;
  const { max, totals, wrap } = chartFrame(labels, series, id);
  if (max <= 0) return wrap;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": series.map((s) => s.name).join(", ") });
  const x = (v) => L + (W - L - R) * (v / max);
  labels.forEach((label, i) => {
    const yy = T + i * rowH;
    const name = label.length > 22 ? label.slice(0, 21) + "…" : label;
    chart.append(svg("text", { x: L - 10, y: yy + rowH / 2 + 4, "text-anchor": "end" }, name, svg("title", {}, label)));
    let base = 0;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (v > 0) {
        chart.append(svg("rect", { class: "bar fill" + (si + 1), x: x(base), y: yy + 6, width: Math.max(1, x(base + v) - x(base)),
          height: rowH - 12, rx: 2 }, svg("title", {}, `${label} · ${s.name}: ${format(v)}`)));
      }
      base += v;
    });
    chart.append(svg("text", { class: "value-label", x: x(base) + 6, y: yy + rowH / 2 + 4 }, format(totals[i])));
  });
  wrap.append(chart);
  const lg = legend(series);
  if (lg) wrap.append(lg);
  return wrap;
}
