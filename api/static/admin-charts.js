// Small hand-written SVG charts: no library. Each chart is an <svg role="img"> with an
// aria-label that says in words what it draws; the numbers are also in a table on its page.

import { s } from "./admin-dom.js";

function scale(values, low, high, from, to) {
  const span = high - low || 1;
  return values.map((v) => from + ((v - low) / span) * (to - from));
}

/** A size sparkline: one line through `values`, the last point marked. */
export function sparkline(values, label, { width = 120, height = 28 } = {}) {
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
  if (values.length === 0) return svg;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const xs = values.length === 1 ? [width - 2] : scale(values.map((_, i) => i), 0, values.length - 1, 2, width - 2);
  const ys = scale(values, low, high === low ? low + 1 : high, height - 3, 3);
  const points = xs.map((x, i) => `${x.toFixed(1)},${ys[i].toFixed(1)}`).join(" ");
  svg.append(s("polyline", { class: "line", points }));
  svg.append(s("circle", { class: "dot", cx: xs.at(-1).toFixed(1), cy: ys.at(-1).toFixed(1), r: 2.5 }));
  return svg;
}

/** Daily size as a line, with entries (up) and exits (down) as bars under it. */
export function historyChart(days, label) {
  const width = 640;
  const height = 220;
  const pad = { left: 44, right: 12, top: 12, bottom: 28 };
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  if (days.length === 0) return svg;
  const sizes = days.map((d) => d.size);
  const high = Math.max(...sizes);
  const low = Math.min(...sizes) === high ? Math.max(0, high - 1) : Math.min(...sizes);
  const plotHeight = (height - pad.top - pad.bottom) * 0.7;
  const barBase = height - pad.bottom;
  const barRoom = (height - pad.top - pad.bottom) * 0.25;
  const step = (width - pad.left - pad.right) / days.length;
  const flow = Math.max(1, ...days.map((d) => Math.max(d.entered, d.left)));
  days.forEach((d, i) => {
    const x = pad.left + i * step;
    const up = (d.entered / flow) * barRoom;
    const down = (d.left / flow) * barRoom;
    if (up) svg.append(s("rect", { class: "entered", x: (x + step * 0.15).toFixed(1), y: (barBase - up).toFixed(1), width: (step * 0.35).toFixed(1), height: up.toFixed(1) }));
    if (down) svg.append(s("rect", { class: "left", x: (x + step * 0.5).toFixed(1), y: (barBase - down).toFixed(1), width: (step * 0.35).toFixed(1), height: down.toFixed(1) }));
  });
  const xs = days.map((_, i) => pad.left + (i + 0.5) * step);
  const ys = scale(sizes, low, high === low ? low + 1 : high, pad.top + plotHeight, pad.top);
  svg.append(s("polyline", { class: "line", points: xs.map((x, i) => `${x.toFixed(1)},${ys[i].toFixed(1)}`).join(" ") }));
  svg.append(s("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: barBase, y2: barBase }));
  svg.append(s("text", { class: "tick", x: pad.left - 6, y: pad.top + 4, "text-anchor": "end" }, String(high)));
  svg.append(s("text", { class: "tick", x: pad.left - 6, y: pad.top + plotHeight, "text-anchor": "end" }, String(low)));
  svg.append(s("text", { class: "tick", x: pad.left, y: height - 8 }, days[0].label));
  svg.append(s("text", { class: "tick", x: width - pad.right, y: height - 8, "text-anchor": "end" }, days.at(-1).label));
  return svg;
}

/** Per arm: the conversion rate as a dot and its interval as a bar, on one 0..max scale. */
export function intervalChart(arms, label) {
  const row = 34;
  const width = 640;
  const left = 120;
  const right = 16;
  const height = arms.length * row + 30;
  const svg = s("svg", { class: "chart intervals", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  const high = Math.max(0.01, ...arms.flatMap((a) => [a.ciHigh ?? 0, a.conversionRate ?? 0])) * 1.1;
  const x = (v) => left + (v / high) * (width - left - right);
  arms.forEach((arm, i) => {
    const y = 16 + i * row;
    svg.append(s("text", { class: "label", x: left - 8, y: y + 4, "text-anchor": "end" }, arm.isControl ? `${arm.variant} (control)` : arm.variant));
    svg.append(s("line", { class: "track", x1: left, x2: width - right, y1: y, y2: y }));
    if (arm.ciLow !== null && arm.ciHigh !== null) {
      svg.append(s("line", { class: arm.isControl ? "interval control" : "interval", x1: x(arm.ciLow).toFixed(1), x2: x(arm.ciHigh).toFixed(1), y1: y, y2: y }));
    }
    if (arm.conversionRate !== null) {
      svg.append(s("circle", { class: arm.isControl ? "rate control" : "rate", cx: x(arm.conversionRate).toFixed(1), cy: y, r: 5 }));
    }
  });
  const axis = height - 10;
  svg.append(s("text", { class: "tick", x: left, y: axis }, "0 %"));
  svg.append(s("text", { class: "tick", x: width - right, y: axis, "text-anchor": "end" }, `${(high * 100).toFixed(1)} %`));
  return svg;
}
