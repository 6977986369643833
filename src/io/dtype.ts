/**
 * Safetensors dtypes and exact float16 / bfloat16 <-> float32 conversions.
 * Plain typed arrays only (no tfjs). All byte data is little-endian, as safetensors defines it.
 */
import { CheckpointError } from '../errors';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_SIZE: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Number of elements of a tensor of this shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The allow-list, in the order of DTYPE_SIZE. */
export const DTYPES = Object.keys(DTYPE_SIZE) as DType[];

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, x);
}

/** Dtypes that decodeToFloat32 accepts. */
export function isFloatDType(d: DType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

// Typed-array views use host byte order; every supported Node platform is little-endian, but a silent
// byte swap would corrupt every weight, so refuse loudly instead.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('llava-vision-tfjs: big-endian hosts are not supported (safetensors data is little-endian)');
}

// Scratch views for reinterpreting float32 <-> uint32 bits.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** IEEE half -> number. Every half is exactly representable in float32 (and double), so this is exact. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero / subnormal (sign kept for -0)
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** bfloat16 is the top half of a float32: shift the bits back in place. */
export function bf16BitsToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0];
}

/**
 * number -> IEEE half bits. x is first rounded to float32 (the value a float32 tensor holds), then to
 * half with round-to-nearest-even; values past the half range become +-inf; NaN stays a (quiet) NaN.
 */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Half subnormal (or zero): value = m * 2^(e-14) in units of the smallest subnormal 2^-24.
    if (e < -10) return sign; // below half of the smallest subnormal: rounds to +-0
    const m = mant | 0x800000;
    const shift = 14 - e;
    return sign | roundShift(m, shift); // a carry into bit 10 correctly yields the smallest normal
  }
  // Normal: drop 13 mantissa bits; a carry out of the mantissa bumps the exponent (up to inf), as it should.
  return sign | roundShift((e << 23) | mant, 13);
}

/** v >> shift with round-to-nearest-even on the dropped bits (shift in 1..24, v < 2^31). */
function roundShift(v: number, shift: number): number {
  const kept = v >>> shift;
  const rem = v & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rem > half || (rem === half && kept & 1) ? kept + 1 : kept;
}

/** number -> bfloat16 bits: float32 rounded to its top 16 bits with RNE; overflow -> inf; NaN stays NaN. */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0];
  // Rounding a NaN could carry into the exponent or clear the mantissa; force a quiet NaN instead.
  if ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff) return (u >>> 16) | 0x40;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16; // < 2^32 for every non-NaN u
}

/**
 * float32 values -> F16 or BF16 bits (round to nearest even), in a plain loop: `Uint16Array.from(src,
 * fn)` first lists every element as a JS value (far more heap, and much slower).
 */
export function toHalfBits(src: Float32Array, dtype: 'F16' | 'BF16'): Uint16Array {
  const toBits = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = toBits(src[i]);
  return out;
}

const halfTables: Partial<Record<'F16' | 'BF16', Float32Array>> = {};
/**
 * All 65536 values of a 16-bit float dtype, decoded once (256 KB each): a table lookup is the fastest
 * exact per-element decode in JS, and it lets one loop serve F16 and BF16.
 */
export function halfLut(dtype: 'F16' | 'BF16'): Float32Array {
  let table = halfTables[dtype];
  if (!table) {
    table = new Float32Array(65536);
    const decode = dtype === 'F16' ? f16BitsToF32 : bf16BitsToF32;
    for (let i = 0; i < 65536; i++) table[i] = decode(i);
    halfTables[dtype] = table;
  }
  return table;
}

/**
 * Little-endian bytes of a float tensor -> a new Float32Array (F16/BF16 exact, F32 copied, F64 rounded
 * to nearest float32). `name` only labels errors. Integer/bool dtypes are refused: silently turning
 * token ids or masks into floats would hide a checkpoint mix-up.
 */
export function decodeToFloat32(dtype: DType, bytes: Uint8Array, name: string): Float32Array {
  checkFloatBytes(dtype, bytes, name);
  const size = DTYPE_SIZE[dtype];
  // Typed views need an aligned offset; copy only when the caller's bytes are misaligned.
  // (new Uint8Array(x) copies; Buffer#slice would not.)
  const src = bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes);
  const n = bytes.byteLength / size;
  const out = new Float32Array(n);
  if (dtype === 'F32')
    out.set(new Float32Array(src.buffer, src.byteOffset, n)); // a copy: never alias the input
  else if (dtype === 'F64')
    out.set(new Float64Array(src.buffer, src.byteOffset, n)); // store rounds to nearest even
  else lookupHalves(new Uint16Array(src.buffer, src.byteOffset, n), halfLut(dtype as 'F16' | 'BF16'), out);
  return out;
}

/**
 * out[i] = lut[bits[i]]: 16-bit floats decoded through `halfLut`. Its own small monomorphic function:
 * V8 compiles such an element loop faster than the same loop inside a dtype switch.
 */
export function lookupHalves(bits: Uint16Array, lut: Float32Array, out: Float32Array): void {
  for (let i = 0; i < bits.length; i++) out[i] = lut[bits[i]];
}

function checkFloatBytes(dtype: DType, bytes: Uint8Array, name: string): void {
  if (!isFloatDType(dtype)) {
    throw new CheckpointError(`tensor ${JSON.stringify(name)}: dtype ${dtype} cannot be read as float32`);
  }
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new CheckpointError(
      `tensor ${JSON.stringify(name)}: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`,
    );
  }
}
