/**
 * Numerical matchers for `expect.extend`, in Jest and in Vitest (both call a matcher with the
 * received value and the arguments, `this.isNot` telling a `.not`), with no dependency on either:
 *
 * - `toBeAllClose(expected, { atol, rtol, equalNaN })`: numpy.allclose;
 * - `toMatchReference(reference, { bound })`: the project's parity rule against a reference entry,
 *   max|received − truth| ≤ bound · torch_fp32_max_abs_err + f32_storage_max_abs_err;
 * - `toHaveShape(shape)`.
 *
 * The shape is checked first. A failure says the shapes, how many elements are out of tolerance, the
 * worst element (multi-index, both values), the max absolute and relative error, the cosine
 * similarity, NaN/±Inf counts, and for references the ratio to PyTorch's own error.
 */
import { DEFAULT_PARITY_K, parityBound } from '../parity';
import { ComparisonResult, Tolerance, compareArrays, elementCount, sameShape } from '../check/compare';
import { comparisonLines, errorText, ratioText } from '../check/describe';
import { ReferenceMeta } from '../check/reference';
import { quote, shapeText } from '../errors';
import { ArrayView, TensorLike, toArrayView } from './tensor_like';

/** numpy.allclose's parameters and defaults: rtol 1e-5, atol 1e-8, equalNaN false. */
export interface AllCloseOptions {
  atol?: number;
  rtol?: number;
  equalNaN?: boolean;
}

export interface MatchReferenceOptions {
  /** k in k · torch_fp32_max_abs_err + f32_storage_max_abs_err (default 4, the project's own tests' bound). */
  bound?: number;
}

/** A reference entry: `readReference(file)[name]`, or any `{ shape, data, meta }` with the fixtures' fields. */
export interface ReferenceLike {
  readonly shape: readonly number[];
  readonly data: ArrayLike<number>;
  readonly meta: ReferenceMeta;
  readonly name?: string;
  readonly file?: string;
}

/** What Jest and Vitest pass as `this` (only `isNot` is used). */
export interface MatcherContextLike {
  isNot?: boolean;
}

export interface MatcherResult {
  pass: boolean;
  message: () => string;
}

function hint(ctx: MatcherContextLike | undefined, matcher: string, argument: string): string {
  return `expect(received)${ctx?.isNot ? '.not' : ''}.${matcher}(${argument})`;
}

function checkOption(matcher: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${matcher}: option ${name} must be a finite number >= 0, got ${quote(value)}`);
  }
  return value;
}

/** The two shapes, a bare typed array taking the other's when the element counts agree; null when they differ. */
function commonShape(a: ArrayView, b: ArrayView): number[] | null {
  if (a.shape && b.shape) return sameShape(a.shape, b.shape) ? a.shape : null;
  const shape = a.shape ?? b.shape ?? [a.data.length];
  return elementCount(shape) === a.data.length && elementCount(shape) === b.data.length ? shape : null;
}

const shapeOf = (v: ArrayView): string => (v.shape ? shapeText(v.shape) : `${v.data.length} values (flat)`);

function shapeMismatch(
  ctx: MatcherContextLike | undefined,
  matcher: string,
  argument: string,
  received: ArrayView,
  expected: ArrayView,
  expectedName: string,
): MatcherResult {
  return {
    pass: false,
    message: () =>
      `${hint(ctx, matcher, argument)}\n\nshape: received ${shapeOf(received)}, ${expectedName} ${shapeOf(expected)}`,
  };
}

function resultMessage(
  ctx: MatcherContextLike | undefined,
  head: string,
  first: string[],
  r: ComparisonResult,
  expectedName: string,
): string {
  const lines = [...first];
  if (ctx?.isNot && r.pass)
    lines.push(`all ${r.count} elements are within the tolerance, and .not expected some outside it`);
  lines.push(...comparisonLines(r, { actual: 'received', expected: expectedName }));
  return `${head}\n\n${lines.join('\n')}`;
}

export function toBeAllClose(
  this: MatcherContextLike | void,
  received: unknown,
  expected: TensorLike,
  options: AllCloseOptions = {},
): MatcherResult {
  const ctx = this ?? undefined;
  const matcher = 'toBeAllClose';
  const rtol = checkOption(matcher, 'rtol', options.rtol, 1e-5);
  const atol = checkOption(matcher, 'atol', options.atol, 1e-8);
  if (options.equalNaN !== undefined && typeof options.equalNaN !== 'boolean')
    throw new TypeError(`${matcher}: option equalNaN must be true or false`);
  const equalNaN = options.equalNaN ?? false;
  const a = toArrayView(received, `${matcher}: received`);
  const e = toArrayView(expected, `${matcher}: expected`);
  const shape = commonShape(a, e);
  if (!shape) return shapeMismatch(ctx, matcher, 'expected', a, e, 'expected');
  const tolerance: Tolerance = { kind: 'allclose', atol, rtol, equalNaN };
  const r = compareArrays(a.data, e.data, shape, tolerance);
  const first = [
    `shape ${shapeText(shape)}; |received − expected| ≤ atol + rtol·|expected| with atol ${atol}, rtol ${rtol}${equalNaN ? ', NaN equal to NaN' : ''} (numpy.allclose)`,
  ];
  return { pass: r.pass, message: () => resultMessage(ctx, hint(ctx, matcher, 'expected'), first, r, 'expected') };
}

/** The reference's bound for k, or why there is none (the missing field). */
export function referenceTolerance(
  meta: ReferenceMeta,
  k: number,
): { tolerance: Tolerance; text: string; torchErr: number | null } | { missing: string } {
  if (meta.exact)
    return {
      tolerance: { kind: 'exact' },
      text: 'exact: the reference marks it as an input or a bit-exact value (e.g. pixel values)',
      torchErr: null,
    };
  const torchErr = meta.torch_fp32_max_abs_err;
  if (torchErr === undefined) return { missing: 'torch_fp32_max_abs_err' };
  const storage = meta.f32_storage_max_abs_err ?? 0;
  const limit = parityBound(meta, k);
  return {
    tolerance: { kind: 'bound', limit },
    text: `bound ${k} × ${errorText(torchErr)} (PyTorch fp32's own error) + ${errorText(storage)} (float32 storage) = ${errorText(limit)}`,
    torchErr,
  };
}

export function toMatchReference(
  this: MatcherContextLike | void,
  received: unknown,
  reference: ReferenceLike,
  options: MatchReferenceOptions = {},
): MatcherResult {
  const ctx = this ?? undefined;
  const matcher = 'toMatchReference';
  const k = checkOption(matcher, 'bound', options.bound, DEFAULT_PARITY_K);
  const ref = toArrayView(reference, `${matcher}: reference`);
  const label = `reference${ref.name !== undefined ? ` "${ref.name}"` : ''}${ref.file !== undefined ? ` (${ref.file})` : ''}`;
  if (!ref.meta) {
    throw new TypeError(
      `${matcher}: ${label} has no metadata (meta): pass an entry of readReference(file), or compare with toBeAllClose`,
    );
  }
  const rule = referenceTolerance(ref.meta, k);
  if ('missing' in rule) {
    throw new TypeError(
      `${matcher}: ${label} has no ${rule.missing} in its metadata, so there is no bound to check against ` +
        '(write the reference with python/llava_vision_reference.py, or compare with toBeAllClose)',
    );
  }
  const a = toArrayView(received, `${matcher}: received`);
  const shape = commonShape(a, ref);
  if (!shape) return shapeMismatch(ctx, matcher, 'reference', a, ref, 'reference');
  const r = compareArrays(a.data, ref.data, shape, rule.tolerance);
  const first = [`${label}, shape ${shapeText(shape)}`, rule.text];
  if (rule.torchErr !== null) {
    const ratio = rule.torchErr > 0 ? r.maxAbsErr / rule.torchErr : r.maxAbsErr === 0 ? 0 : Infinity;
    first.push(`max abs error / PyTorch fp32's error: ${ratioText(ratio)} (bound ${k})`);
  }
  return { pass: r.pass, message: () => resultMessage(ctx, hint(ctx, matcher, 'reference'), first, r, 'reference') };
}

export function toHaveShape(
  this: MatcherContextLike | void,
  received: unknown,
  shape: readonly number[],
): MatcherResult {
  const ctx = this ?? undefined;
  const matcher = 'toHaveShape';
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw new TypeError(`${matcher}: expected shape must be an array of non-negative integers`);
  }
  const a = toArrayView(received, `${matcher}: received`);
  const actual = a.shape ?? [a.data.length];
  const pass = sameShape(actual, shape);
  return {
    pass,
    message: () =>
      `${hint(ctx, matcher, 'shape')}\n\nshape: received ${shapeText(actual)}${a.shape ? '' : ' (a flat typed array)'}, expected ${ctx?.isNot ? 'not ' : ''}${shapeText(shape)}`,
  };
}

/** For `expect.extend(matchers)`. */
export const matchers = { toBeAllClose, toMatchReference, toHaveShape };
