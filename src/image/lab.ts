/**
 * CIELab to RGB exactly as Pillow 9.4's convert('RGB') of a LAB image (a CIELab TIFF): ImageCms
 * with LittleCMS 2.14 (Lab V2 profile with D50 white -> sRGB, perceptual intent, 8-bit formats).
 * LittleCMS turns that transform into a 33x33x33 grid of 16-bit RGB nodes (the pipeline sampled
 * at the grid's coordinates) and evaluates it by tetrahedral interpolation in fixed point
 * (cmsintrp.c TetrahedralInterp16) on the 8-bit values widened to 16 bits (v * 257), then narrows
 * the result to 8 bits (FROM_16_TO_8). The nodes come from LittleCMS itself
 * (tools/gen_lab_clut.py, lab_clut.ts); test/image_lab.test.ts checks all 2^24 Lab values against
 * Pillow's table.
 */
import * as zlib from 'zlib';
import { LAB_CLUT_GRID, LAB_CLUT_RESIDUALS } from './lab_clut';

let nodes: Uint16Array | undefined;

/** The grid's nodes, decoded once: input 0 (L) slowest, then a, then b; 3 outputs each. */
function clut(): Uint16Array {
  if (nodes) return nodes;
  const g = LAB_CLUT_GRID;
  const packed = zlib.inflateSync(Buffer.from(LAB_CLUT_RESIDUALS, 'base64'));
  const n = g * g * g * 3;
  const out = new Uint16Array(n);
  // Undo the 3-D Lorenzo prediction, in grid order (mod 2^16).
  const at = (i: number, j: number, k: number, c: number) =>
    i < 0 || j < 0 || k < 0 ? 0 : out[((i * g + j) * g + k) * 3 + c];
  for (let i = 0; i < g; i++) {
    for (let j = 0; j < g; j++) {
      for (let k = 0; k < g; k++) {
        for (let c = 0; c < 3; c++) {
          const idx = ((i * g + j) * g + k) * 3 + c;
          const residual = packed[idx] | (packed[n + idx] << 8);
          const predicted =
            at(i - 1, j, k, c) +
            at(i, j - 1, k, c) +
            at(i, j, k - 1, c) -
            at(i - 1, j - 1, k, c) -
            at(i - 1, j, k - 1, c) -
            at(i, j - 1, k - 1, c) +
            at(i - 1, j - 1, k - 1, c);
          out[idx] = (predicted + residual) & 0xffff;
        }
      }
    }
  }
  nodes = out;
  return out;
}

/** _cmsToFixedDomain: a 16-bit value times the grid's domain, in 15.16 fixed point. */
function toFixedDomain(a: number): number {
  return a + (((a + 0x7fff) / 0xffff) | 0); // a >= 0
}

/**
 * RGB (3 bytes per pixel) of `n` pixels of a Pillow LAB image (4 bytes per pixel: L, a + 128,
 * b + 128, unused).
 */
export function labToRgb(lab: Uint8Array, n: number): Uint8Array {
  const table = clut();
  const g = LAB_CLUT_GRID;
  const domain = g - 1;
  const [optaX, optaY, optaZ] = [3 * g * g, 3 * g, 3];
  const out = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    const i0 = lab[4 * p] * 257;
    const i1 = lab[4 * p + 1] * 257;
    const i2 = lab[4 * p + 2] * 257;
    const fx = toFixedDomain(i0 * domain);
    const fy = toFixedDomain(i1 * domain);
    const fz = toFixedDomain(i2 * domain);
    const rx = fx & 0xffff;
    const ry = fy & 0xffff;
    const rz = fz & 0xffff;
    const base = optaX * (fx >> 16) + optaY * (fy >> 16) + optaZ * (fz >> 16);
    const X1 = i0 === 0xffff ? 0 : optaX;
    const Y1 = i1 === 0xffff ? 0 : optaY;
    const Z1 = i2 === 0xffff ? 0 : optaZ;
    // The tetrahedron holding the point, by the order of the fractional parts (as in
    // TetrahedralInterp16): the offsets of its 2nd, 3rd and 4th corners, and which differences
    // go with rx, ry, rz.
    let a: number;
    let b: number;
    let c: number;
    let order: number;
    if (rx >= ry) {
      if (ry >= rz) {
        a = X1;
        b = X1 + Y1;
        c = X1 + Y1 + Z1;
        order = 0;
      } else if (rz >= rx) {
        a = Z1 + X1;
        b = Z1 + X1 + Y1;
        c = Z1;
        order = 1;
      } else {
        a = X1;
        b = X1 + Z1 + Y1;
        c = X1 + Z1;
        order = 2;
      }
    } else if (rx >= rz) {
      a = Y1 + X1;
      b = Y1;
      c = Y1 + X1 + Z1;
      order = 3;
    } else if (ry >= rz) {
      a = Y1 + Z1 + X1;
      b = Y1;
      c = Y1 + Z1;
      order = 4;
    } else {
      a = Z1 + Y1 + X1;
      b = Z1 + Y1;
      c = Z1;
      order = 5;
    }
    for (let ch = 0; ch < 3; ch++) {
      const L = base + ch;
      const c0 = table[L];
      let c1 = table[L + a];
      let c2 = table[L + b];
      let c3 = table[L + c];
      if (order === 0) {
        c3 -= c2;
        c2 -= c1;
        c1 -= c0;
      } else if (order === 1) {
        c2 -= c1;
        c1 -= c3;
        c3 -= c0;
      } else if (order === 2) {
        c2 -= c3;
        c3 -= c1;
        c1 -= c0;
      } else if (order === 3) {
        c3 -= c1;
        c1 -= c2;
        c2 -= c0;
      } else if (order === 4) {
        c1 -= c3;
        c3 -= c2;
        c2 -= c0;
      } else {
        c1 -= c2;
        c2 -= c3;
        c3 -= c0;
      }
      // In C these are int products and sums that wrap at 32 bits; the exact sum taken mod 2^32 is the same.
      const rest = (c1 * rx + c2 * ry + c3 * rz + 0x8001) | 0;
      const v = (c0 + ((rest + (rest >> 16)) >> 16)) & 0xffff;
      out[3 * p + ch] = (v * 65281 + 8388608) >>> 24; // FROM_16_TO_8 (v * 65281 + 2^23 < 2^32)
    }
  }
  return out;
}
