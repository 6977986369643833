/**
 * Element-by-element comparison of two arrays of the same shape, fed in pieces (a reference's tiles
 * one at a time) or at once, under one of three tolerances:
 *
 * - `allclose`: numpy.allclose, |a − e| ≤ atol + rtol·|e| with e the expected value; ±Inf is close
 *   only to the same infinity, NaN only to NaN and only with `equalNaN`;
 * - `bound`: the project's parity rule, |a − e| ≤ limit, where limit = k·torch_fp32_max_abs_err +
 *   f32_storage_max_abs_err; a NaN or ±Inf on either side is never within it (as in `checkParity`);
 * - `exact`: the same value (pixel values are bit-identical to Pillow's or they are wrong).
 *
 * No tfjs and no test framework here: the matchers (src/testing) and `llava-vision check` both use it.
 */
import { shapeText } from '../errors';

export type Tolerance =
  | { kind: 'allclose'; atol: number; rtol: number; equalNaN: boolean }
  | { kind: 'bound'; limit: number }
  | { kind: 'exact' };

export interface NonFiniteCounts {
  actualNaN: number;
  expectedNaN: number;
  /** ±Inf. */
  actualInf: number;
  expectedInf: number;
}

/** The element that breaks the tolerance the most (or, when none does, the largest difference). */
export interface WorstElement {
  /** Multi-index into the shape. */
  index: number[];
  actual: number;
  expected: number;
  absErr: number;
}

export interface ComparisonResult {
  shape: number[];
  count: number;
  /** Elements out of tolerance (NaN and ±Inf counted as the tolerance says). */
  outOfTolerance: number;
  nonFinite: NonFiniteCounts;
  /** max |a − e| over the elements finite on both sides (0 when there are none). */
  maxAbsErr: number;
  /** max |a − e| / |e| over the elements finite on both sides with e ≠ 0. */
  maxRelErr: number;
  /** Σ a·e / √(Σ a² · Σ e²) over the elements finite on both sides (1 for two zero arrays, 0 for one). */
  cosine: number;
  worst: WorstElement | null;
  pass: boolean;
}

/** Row-major multi-index of a flat index. */
export function multiIndex(flat: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d];
    if (n > 0) {
      index[d] = flat % n;
      flat = Math.floor(flat / n);
    }
  }
  return index;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/** Accumulates a comparison over pieces of the arrays, each at its flat offset; `result()` gives the totals. */
export class Comparison {
  private readonly count: number;
  private seen = 0;
  private bad = 0;
  private readonly nonFinite: NonFiniteCounts = { actualNaN: 0, expectedNaN: 0, actualInf: 0, expectedInf: 0 };
  private maxAbs = 0;
  private maxRel = 0;
  private dot = 0;
  private sumA2 = 0;
  private sumE2 = 0;
  private worstAt = -1;
  private worstScore = -1;
  private worstDiff = -1;
  private worstActual = 0;
  private worstExpected = 0;

  constructor(
    readonly shape: readonly number[],
    readonly tolerance: Tolerance,
  ) {
    this.count = elementCount(shape);
  }

  /** Compares `actual[i]` with `expected[i]` as the elements at `offset + i`. */
  add(actual: ArrayLike<number>, expected: ArrayLike<number>, offset = 0): void {
    if (actual.length !== expected.length)
      throw new RangeError(`comparison: ${actual.length} values against ${expected.length}`);
    if (offset < 0 || offset + actual.length > this.count) {
      throw new RangeError(
        `comparison: elements ${offset}..${offset + actual.length} are outside ${shapeText(this.shape)}`,
      );
    }
    const tol = this.tolerance;
    const nf = this.nonFinite;
    for (let i = 0; i < actual.length; i++) {
      const a = actual[i];
      const e = expected[i];
      let within: boolean;
      let score: number;
      let diff: number;
      if (Number.isFinite(a) && Number.isFinite(e)) {
        diff = Math.abs(a - e);
        if (diff > this.maxAbs) this.maxAbs = diff;
        if (e !== 0) {
          const rel = diff / Math.abs(e);
          if (rel > this.maxRel) this.maxRel = rel;
        }
        this.dot += a * e;
        this.sumA2 += a * a;
        this.sumE2 += e * e;
        const allowed =
          tol.kind === 'allclose' ? tol.atol + tol.rtol * Math.abs(e) : tol.kind === 'bound' ? tol.limit : 0;
        within = diff <= allowed;
        score = allowed > 0 ? diff / allowed : diff > 0 ? Infinity : 0;
      } else {
        if (Number.isNaN(a)) nf.actualNaN++;
        else if (!Number.isFinite(a)) nf.actualInf++;
        if (Number.isNaN(e)) nf.expectedNaN++;
        else if (!Number.isFinite(e)) nf.expectedInf++;
        if (tol.kind === 'allclose') {
          // numpy.isclose: infinities equal when in the same place with the same sign; NaN only with equal_nan.
          within = Number.isNaN(a) || Number.isNaN(e) ? tol.equalNaN && Number.isNaN(a) && Number.isNaN(e) : a === e;
        } else {
          within = false;
        }
        diff = within ? 0 : Infinity;
        score = within ? 0 : Infinity;
      }
      if (!within) this.bad++;
      // The worst element: the largest excess over the tolerance, then the largest difference, then the first.
      if (score > this.worstScore || (score === this.worstScore && diff > this.worstDiff)) {
        this.worstScore = score;
        this.worstDiff = diff;
        this.worstAt = offset + i;
        this.worstActual = a;
        this.worstExpected = e;
      }
    }
    this.seen += actual.length;
  }

  result(): ComparisonResult {
    if (this.seen !== this.count) throw new RangeError(`comparison: ${this.seen} of ${this.count} elements compared`);
    const norms = Math.sqrt(this.sumA2) * Math.sqrt(this.sumE2);
    const cosine = norms > 0 ? this.dot / norms : this.sumA2 === 0 && this.sumE2 === 0 ? 1 : 0;
    const worst =
      this.worstAt < 0
        ? null
        : {
            index: multiIndex(this.worstAt, this.shape),
            actual: this.worstActual,
            expected: this.worstExpected,
            absErr: Math.abs(this.worstActual - this.worstExpected),
          };
    return {
      shape: [...this.shape],
      count: this.count,
      outOfTolerance: this.bad,
      nonFinite: { ...this.nonFinite },
      maxAbsErr: this.maxAbs,
      maxRelErr: this.maxRel,
      cosine,
      worst,
      pass: this.bad === 0,
    };
  }
}

/** One call: the comparison of two whole arrays of `shape`. */
export function compareArrays(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  shape: readonly number[],
  tolerance: Tolerance,
): ComparisonResult {
  const c = new Comparison(shape, tolerance);
  c.add(actual, expected, 0);
  return c.result();
}
