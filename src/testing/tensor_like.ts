/**
 * What the matchers accept as an array, turned into a shape and flat values: a tf.Tensor (read with
 * `dataSync`), a typed array, nested arrays of numbers, `{ shape, data }` (an `EncodedTensor`, a
 * dataset's stored tensor, an entry of a reference file), or a number. No tfjs import: a tensor is
 * recognised by its `shape` and `dataSync`, so the matchers work with whichever tfjs the app has.
 */
import { shapeText } from '../errors';
import { ReferenceMeta } from '../check/reference';

/** A tf.Tensor as the matchers use it (any tfjs version's tensor has these). */
export interface TensorWithData {
  readonly shape: number[];
  dataSync(): ArrayLike<number> | ArrayLike<string> | ArrayLike<Uint8Array>;
  readonly isDisposed?: boolean;
}

export type NumericArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint8ClampedArray
  | Uint16Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** Nested arrays of numbers, any depth. */
export type NestedNumbers = number | readonly NestedNumbers[];

/** `{ shape, data }`: `EncodedTensor`, a reference entry (`ReferenceTensor`), a dataset's stored tensor. */
export interface ShapedData {
  readonly dtype?: string;
  readonly shape: readonly number[];
  readonly data: NumericArray | readonly number[];
}

/**
 * Anything a matcher compares. A typed array on its own carries no shape: it takes the shape of the
 * other side when the element counts agree (so `await tensor.data()` can be compared with a reference).
 */
export type TensorLike = TensorWithData | NumericArray | NestedNumbers | ShapedData;

/** An array as the matchers see it. */
export interface ArrayView {
  /** null for a bare typed array (see TensorLike). */
  shape: number[] | null;
  data: ArrayLike<number>;
  /** The reference entry's name and metadata, when it is one. */
  name?: string;
  meta?: ReferenceMeta;
  file?: string;
}

const isTypedArray = (x: unknown): x is NumericArray => ArrayBuffer.isView(x) && !(x instanceof DataView);
const kindOf = (x: unknown): string =>
  x === null
    ? 'null'
    : Array.isArray(x)
      ? 'array'
      : typeof x === 'object'
        ? Object.prototype.toString.call(x).slice(8, -1)
        : typeof x;

const ACCEPTED =
  'a tf.Tensor, a typed array, nested arrays of numbers, { shape, data } (an EncodedTensor or a reference entry) or a number';

/** `what`: "received" or "expected", for the error naming the argument. */
export function toArrayView(x: unknown, what: string): ArrayView {
  const bad = (problem: string) => new TypeError(`${what} ${problem}`);
  if (typeof x === 'number') return { shape: [], data: [x] };
  if (isTypedArray(x)) return { shape: null, data: numbers(x) };
  if (Array.isArray(x)) return nested(x as NestedNumbers[], what);
  if (typeof x === 'object' && x !== null) {
    const o = x as Record<string, unknown>;
    if (typeof o.dataSync === 'function' && Array.isArray(o.shape)) {
      if (o.isDisposed === true) throw bad('is a disposed tf.Tensor');
      const values = (o.dataSync as () => unknown)();
      if (!isTypedArray(values)) throw bad(`is a tf.Tensor of dtype ${String(o.dtype)}, not numbers`);
      return { shape: checkShape(o.shape, what), data: numbers(values) };
    }
    if ('data' in o && 'shape' in o) {
      const shape = checkShape(o.shape, what);
      const data = o.data;
      if (!isTypedArray(data) && !(Array.isArray(data) && data.every((v) => typeof v === 'number'))) {
        throw bad(`.data must be a typed array or an array of numbers, got ${kindOf(data)}`);
      }
      const n = shape.reduce((a, b) => a * b, 1);
      if (data.length !== n) throw bad(`has ${data.length} values but its shape ${shapeText(shape)} holds ${n}`);
      const view: ArrayView = { shape, data: isTypedArray(data) ? numbers(data) : data };
      if (typeof o.name === 'string') view.name = o.name;
      if (typeof o.meta === 'object' && o.meta !== null) view.meta = o.meta;
      if (typeof o.file === 'string') view.file = o.file;
      return view;
    }
  }
  throw bad(`must be ${ACCEPTED}; got ${kindOf(x)}`);
}

function checkShape(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) {
    throw new TypeError(`${what}.shape must be an array of non-negative integers`);
  }
  return [...(shape as number[])];
}

/** 64-bit integers become numbers (exact below 2^53); other typed arrays are used as they are. */
function numbers(x: NumericArray): ArrayLike<number> {
  if (x instanceof BigInt64Array || x instanceof BigUint64Array) return Float64Array.from(x, (v) => Number(v));
  return x;
}

/** Shape and row-major values of nested arrays; a ragged or non-numeric one is refused naming where. */
function nested(x: readonly NestedNumbers[], what: string): ArrayView {
  const shape: number[] = [];
  for (let level: NestedNumbers = x; Array.isArray(level); level = (level as readonly NestedNumbers[])[0]) {
    shape.push((level as readonly NestedNumbers[]).length);
    if ((level as readonly NestedNumbers[]).length === 0) break;
  }
  const out: number[] = [];
  const walk = (v: NestedNumbers, depth: number, at: number[]): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number')
        throw new TypeError(`${what}${at.map((i) => `[${i}]`).join('')} is ${kindOf(v)}, not a number`);
      out.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      const got = Array.isArray(v) ? `${v.length} entries` : kindOf(v);
      throw new TypeError(
        `${what}${at.map((i) => `[${i}]`).join('')} is ragged: ${got} where the first row has ${shape[depth]}`,
      );
    }
    (v as readonly NestedNumbers[]).forEach((child, i) => walk(child, depth + 1, [...at, i]));
  };
  walk(x, 0, []);
  return { shape, data: out };
}
