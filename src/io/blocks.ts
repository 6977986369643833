/**
 * Blocks of a checkpoint matrix: where a model variable's data sits inside a checkpoint tensor (a
 * per-head slice, a transposed kernel), and the one-pass copies between the two, decoding the file's
 * dtype on the way. Plain typed arrays only (no tfjs).
 */
import { DType, DTYPE_SIZE, decodeToFloat32, halfLut, lookupHalves } from './dtype';

/**
 * Rows r0..r0+nr and columns c0..c0+nc of a row-major [rows, cols] matrix, stored as is ([nr, nc]) or
 * transposed ([nc, nr]).
 */
export interface Block {
  r0: number;
  nr: number;
  c0: number;
  nc: number;
  transposed: boolean;
}

/**
 * `block` of the little-endian `dtype` matrix in `bytes` (`cols` columns) as float32, written into the
 * first nr·nc elements of `out`, in one pass: F32 is copied or transposed straight from the bytes, F16
 * and BF16 through a 65536-entry table inside the same loops. So a loader can write weights straight
 * into the backend's memory with no full-size temporary. (F64, rare in checkpoints, is decoded first.)
 */
export function decodeBlock(
  dtype: DType,
  bytes: Uint8Array,
  cols: number,
  block: Block,
  out: Float32Array,
  name: string,
): void {
  const { r0, nr, c0, nc, transposed } = block;
  const size = DTYPE_SIZE[dtype];
  if (out.length < nr * nc)
    throw new RangeError(`tensor ${JSON.stringify(name)}: a ${nr}x${nc} block does not fit an array of ${out.length}`);
  if ((r0 + nr - 1) * cols + c0 + nc > bytes.byteLength / size)
    throw new RangeError(`tensor ${JSON.stringify(name)}: block outside the tensor`);
  // Typed views need an aligned offset; copy only when the caller's bytes are misaligned.
  const aligned = bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes);
  if (dtype === 'F16' || dtype === 'BF16') {
    const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    const lut = halfLut(dtype);
    if (transposed) transposeRegionLut(bits, lut, cols, r0, nr, c0, nc, out);
    else
      for (let r = 0; r < nr; r++)
        lookupHalves(bits.subarray((r0 + r) * cols + c0, (r0 + r) * cols + c0 + nc), lut, out.subarray(r * nc));
    return;
  }
  const src =
    dtype === 'F32'
      ? new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4)
      : decodeToFloat32(dtype, aligned, name);
  if (transposed) transposeRegion(src, cols, r0, nr, c0, nc, out);
  else if (nc === cols) out.set(src.subarray(r0 * cols, (r0 + nr) * cols));
  else for (let r = 0; r < nr; r++) out.set(src.subarray((r0 + r) * cols + c0, (r0 + r) * cols + c0 + nc), r * nc);
}

/** The inverse of `decodeBlock` for float32: writes a block's data (in its layout) back into `matrix`. */
export function encodeBlock(data: Float32Array, matrix: Float32Array, cols: number, block: Block): void {
  const { r0, nr, c0, nc, transposed } = block;
  if (transposed) untransposeRegion(data, matrix, cols, r0, nr, c0, nc);
  else for (let r = 0; r < nr; r++) matrix.set(data.subarray(r * nc, (r + 1) * nc), (r0 + r) * cols + c0);
}

const TILE = 64;

/**
 * The [nr, nc] block at (r0, c0) of a row-major matrix with `cols` columns, transposed: [nc, nr]
 * (into the first nr·nc elements of `out` when given). Tiled, so both sides are walked in cache-sized
 * squares, four source rows at a time so each output row gets four adjacent writes (faster than a
 * plain tiled loop; a checkpoint load transposes every weight matrix of the tower).
 */
export function transposeRegion(
  data: Float32Array,
  cols: number,
  r0: number,
  nr: number,
  c0: number,
  nc: number,
  out?: Float32Array,
): Float32Array {
  out = out ? out.subarray(0, nr * nc) : new Float32Array(nr * nc);
  for (let rb = 0; rb < nr; rb += TILE) {
    const rEnd = Math.min(rb + TILE, nr);
    for (let cb = 0; cb < nc; cb += TILE) {
      const cEnd = Math.min(cb + TILE, nc);
      let r = rb;
      for (; r + 4 <= rEnd; r += 4) {
        const s0 = (r0 + r) * cols + c0;
        const [s1, s2, s3] = [s0 + cols, s0 + 2 * cols, s0 + 3 * cols];
        for (let c = cb; c < cEnd; c++) {
          const o = c * nr + r;
          out[o] = data[s0 + c];
          out[o + 1] = data[s1 + c];
          out[o + 2] = data[s2 + c];
          out[o + 3] = data[s3 + c];
        }
      }
      for (; r < rEnd; r++) {
        const src = (r0 + r) * cols + c0;
        for (let c = cb; c < cEnd; c++) out[c * nr + r] = data[src + c];
      }
    }
  }
  return out;
}

/**
 * `transposeRegion` of a 16-bit float matrix, each element decoded through `lut` as it is moved. The
 * same loop as transposeRegion on purpose: one shared loop over both array kinds would be polymorphic,
 * and V8 runs such element loops slower (see dtype.ts). The wasm backend uses the kernel instead.
 */
function transposeRegionLut(
  bits: Uint16Array,
  lut: Float32Array,
  cols: number,
  r0: number,
  nr: number,
  c0: number,
  nc: number,
  out: Float32Array,
): void {
  for (let rb = 0; rb < nr; rb += TILE) {
    const rEnd = Math.min(rb + TILE, nr);
    for (let cb = 0; cb < nc; cb += TILE) {
      const cEnd = Math.min(cb + TILE, nc);
      let r = rb;
      for (; r + 4 <= rEnd; r += 4) {
        const s0 = (r0 + r) * cols + c0;
        const [s1, s2, s3] = [s0 + cols, s0 + 2 * cols, s0 + 3 * cols];
        for (let c = cb; c < cEnd; c++) {
          const o = c * nr + r;
          out[o] = lut[bits[s0 + c]];
          out[o + 1] = lut[bits[s1 + c]];
          out[o + 2] = lut[bits[s2 + c]];
          out[o + 3] = lut[bits[s3 + c]];
        }
      }
      for (; r < rEnd; r++) {
        const src = (r0 + r) * cols + c0;
        for (let c = cb; c < cEnd; c++) out[c * nr + r] = lut[bits[src + c]];
      }
    }
  }
}

/** Writes `block` ([nc, nr], i.e. transposed) back into the [nr, nc] region at (r0, c0) of `data`. */
export function untransposeRegion(
  block: Float32Array,
  data: Float32Array,
  cols: number,
  r0: number,
  nr: number,
  c0: number,
  nc: number,
): void {
  for (let rb = 0; rb < nr; rb += TILE) {
    const rEnd = Math.min(rb + TILE, nr);
    for (let cb = 0; cb < nc; cb += TILE) {
      const cEnd = Math.min(cb + TILE, nc);
      for (let r = rb; r < rEnd; r++) {
        const dst = (r0 + r) * cols + c0;
        for (let c = cb; c < cEnd; c++) data[dst + c] = block[c * nr + r];
      }
    }
  }
}
