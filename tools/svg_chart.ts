/**
 * A small, dependency-free SVG line chart: side-by-side panels that share
 * one categorical x axis and one y scale, one line per series, one legend.
 *
 * @module
 */

/** One line: a value (or a gap) for each x category. */
export interface Series {
  /** Name shown in the legend and kept in `data-series`. */
  name: string;
  /** Stroke colour. */
  color: string;
  /** SVG `stroke-dasharray`, e.g. `"6 4"`; solid when absent. */
  dash?: string;
}

/** One panel: a title and, per series name, its values by x category. */
export interface Panel {
  /** Panel title, e.g. `256 MiB`. */
  title: string;
  /** Values per series name; `null` leaves a gap. */
  values: Record<string, (number | null)[]>;
}

/** What to draw. */
export interface ChartSpec {
  /** Title across the top. */
  title: string;
  /** Labels of the x categories, shared by all panels. */
  xLabels: string[];
  /** Caption of the x axis. */
  xCaption: string;
  /** Caption of the y axis. */
  yCaption: string;
  /** The lines, in legend order. */
  series: Series[];
  /** The panels, left to right. */
  panels: Panel[];
  /** A line under the legend: where and when it was measured. */
  caption?: string;
}

const PANEL_W = 280;
const PANEL_H = 220;
const PAD = { left: 52, right: 16, top: 44, bottom: 46 };
const LEGEND_ROW = 18;

/** Renders the chart as a standalone SVG document. */
export function lineChart(spec: ChartSpec): string {
  const all = spec.panels.flatMap((p) => Object.values(p.values).flat())
    .filter((v): v is number => v !== null && Number.isFinite(v));
  const ticks = roundTicks(Math.max(0, ...all));
  const yMax = ticks[ticks.length - 1];
  const plotW = PANEL_W - PAD.left - PAD.right;
  const plotH = PANEL_H - PAD.top - PAD.bottom;
  const legendCols = 4;
  const legendRows = Math.ceil(spec.series.length / legendCols);
  const width = Math.max(PANEL_W * spec.panels.length, 4 * 150);
  const captionRows = spec.caption ? 1 : 0;
  const height = PANEL_H + 10 + (legendRows + captionRows) * LEGEND_ROW + 10;
  const x = (i: number) =>
    PAD.left + (spec.xLabels.length === 1 ? plotW / 2 : (i * plotW) / (spec.xLabels.length - 1));
  const y = (v: number) => PAD.top + plotH - (yMax > 0 ? (v / yMax) * plotH : 0);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${
      escape(spec.title)
    }</text>`,
  ];
  spec.panels.forEach((panel, p) => {
    out.push(`<g class="panel" transform="translate(${p * PANEL_W},0)">`);
    out.push(
      `<text x="${PAD.left + plotW / 2}" y="${PAD.top - 10}" text-anchor="middle" ` +
        `font-weight="bold">${escape(panel.title)}</text>`,
    );
    for (const tick of ticks) {
      const ty = y(tick).toFixed(1);
      out.push(
        `<line x1="${PAD.left}" x2="${PAD.left + plotW}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`,
        `<text x="${PAD.left - 6}" y="${ty}" dy="4" text-anchor="end">${formatTick(tick)}</text>`,
      );
    }
    spec.xLabels.forEach((label, i) => {
      out.push(
        `<text x="${x(i).toFixed(1)}" y="${PAD.top + plotH + 16}" text-anchor="middle">${
          escape(label)
        }</text>`,
      );
    });
    out.push(
      `<text x="${PAD.left + plotW / 2}" y="${PANEL_H - 8}" text-anchor="middle">${
        escape(spec.xCaption)
      }</text>`,
      `<text transform="translate(14,${PAD.top + plotH / 2}) rotate(-90)" text-anchor="middle">${
        escape(spec.yCaption)
      }</text>`,
    );
    for (const series of spec.series) {
      const values = panel.values[series.name] ?? [];
      const path = values.map((v, i) => v === null ? "" : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)
        .join(" ").trim().replace(/ {2,}/g, " M");
      if (path === "") continue;
      const dash = series.dash ? ` stroke-dasharray="${series.dash}"` : "";
      out.push(
        `<path class="series" data-series="${escape(series.name)}" d="M${path}" fill="none" ` +
          `stroke="${series.color}" stroke-width="2"${dash}/>`,
      );
      values.forEach((v, i) => {
        if (v === null) return;
        out.push(
          `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${series.color}">` +
            `<title>${escape(series.name)}: ${v.toFixed(2)}</title></circle>`,
        );
      });
    }
    out.push(`</g>`);
  });
  spec.series.forEach((series, i) => {
    const lx = 20 + (i % legendCols) * 150;
    const ly = PANEL_H + 10 + Math.floor(i / legendCols) * LEGEND_ROW;
    const dash = series.dash ? ` stroke-dasharray="${series.dash}"` : "";
    out.push(
      `<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${series.color}" ` +
        `stroke-width="2"${dash}/>`,
      `<text x="${lx + 30}" y="${ly}" dy="4">${escape(series.name)}</text>`,
    );
  });
  if (spec.caption) {
    const cy = PANEL_H + 10 + legendRows * LEGEND_ROW + 4;
    out.push(
      `<text class="caption" x="${width / 2}" y="${cy}" dy="4" text-anchor="middle" ` +
        `fill="#555">${escape(spec.caption)}</text>`,
    );
  }
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/**
 * Round y ticks from 0 to just past `max`: a step of 1, 2 or 5 times a power
 * of ten, chosen so that there are 3 to 7 steps (0, 1, 2, 3, 4, 5 GiB/s, not
 * 0, 1.3, 2.5, 3.8).
 */
export function roundTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const power = 10 ** Math.floor(Math.log10(max));
  let step = power;
  for (const factor of [0.1, 0.2, 0.5, 1, 2, 5]) {
    step = factor * power;
    if (Math.ceil(max / step) <= 7) break;
  }
  const steps = Math.max(1, Math.ceil(max / step - 1e-9));
  // Integer multiples, rounded to the step's decimals, so 0.1 × 3 prints as 0.3.
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return Array.from({ length: steps + 1 }, (_, i) => Number((i * step).toFixed(decimals)));
}

function formatTick(v: number): string {
  return String(v);
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}
