/**
 * The words and numbers of a comparison, shared by the matchers' failure messages and
 * `llava-vision check`'s table, so both say the same thing the same way.
 */
import { ComparisonResult, NonFiniteCounts } from './compare';

/**
 * A value in the fewest digits that give it back: a float32 value as float32's shortest form
 * (1.1, not 1.10000002384185791), any other number as float64's.
 */
export function valueText(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Inf' : '-Inf';
  if (Math.fround(x) === x) {
    for (let p = 1; p <= 9; p++) {
      const s = x.toPrecision(p);
      if (Math.fround(Number(s)) === x) return String(Number(s));
    }
  }
  return String(x);
}

/** An error or a tolerance: three significant digits. */
export function errorText(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Inf' : '-Inf';
  return x === 0 ? '0' : x.toExponential(2);
}

/** A ratio to PyTorch's error: 2 decimals below 100, whole above. */
export function ratioText(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : 'Inf';
  return x < 100 ? x.toFixed(2) : x.toFixed(0);
}

/**
 * Cosine similarity; within 5e-10 of 1 as 1 − d, since 9 decimals would show 1.000000000 for any good
 * result. Below 1e-15, d is the rounding of the sums themselves: shown as 1.
 */
export function cosineText(x: number): string {
  if (!Number.isFinite(x)) return 'NaN';
  const d = 1 - x;
  if (d < 1e-15) return '1';
  return d < 5e-10 ? `1 - ${d.toExponential(1)}` : x.toFixed(9);
}

export function indexText(index: readonly number[]): string {
  return `[${index.join(', ')}]`;
}

export function percentText(part: number, whole: number): string {
  if (whole === 0) return '0%';
  const p = (100 * part) / whole;
  return `${p >= 1 || p === 0 ? p.toFixed(1) : p.toPrecision(2)}%`;
}

export function nonFiniteText(nf: NonFiniteCounts, actual = 'received', expected = 'expected'): string | null {
  if (nf.actualNaN + nf.expectedNaN + nf.actualInf + nf.expectedInf === 0) return null;
  return `NaN: ${actual} ${nf.actualNaN}, ${expected} ${nf.expectedNaN}; ±Inf: ${actual} ${nf.actualInf}, ${expected} ${nf.expectedInf}`;
}

/**
 * The lines after a matcher's first line: how many elements are out of tolerance, the worst one,
 * the max absolute and relative error, the cosine similarity, NaN/±Inf counts.
 */
export function comparisonLines(r: ComparisonResult, names: { actual: string; expected: string }): string[] {
  const lines = [
    `out of tolerance: ${r.outOfTolerance} of ${r.count} elements (${percentText(r.outOfTolerance, r.count)})`,
  ];
  if (r.worst) {
    const w = r.worst;
    lines.push(
      `${r.outOfTolerance ? 'worst' : 'largest difference'} at ${indexText(w.index)}: ${names.actual} ${valueText(w.actual)}, ${names.expected} ${valueText(w.expected)} (|difference| ${errorText(w.absErr)})`,
    );
  }
  lines.push(
    `max abs error ${errorText(r.maxAbsErr)}, max rel error ${errorText(r.maxRelErr)}, cosine similarity ${cosineText(r.cosine)}`,
  );
  const nf = nonFiniteText(r.nonFinite, names.actual, names.expected);
  if (nf) lines.push(nf);
  return lines;
}
