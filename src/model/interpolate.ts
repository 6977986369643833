/**
 * torch `F.interpolate(mode='bicubic', align_corners=False)` as a dense matrix
 * [outH·outW, inH·inW] (row-major grids), so the resize is one matMul on the embedding table.
 */
export function bicubicResizeMatrix(inH: number, inW: number, outH: number, outW: number): Float32Array {
  const rows = axisWeights(inH, outH);
  const cols = axisWeights(inW, outW);
  const m = new Float32Array(outH * outW * inH * inW);
  for (let oy = 0; oy < outH; oy++) {
    for (let ox = 0; ox < outW; ox++) {
      const base = (oy * outW + ox) * inH * inW;
      for (let iy = 0; iy < inH; iy++) {
        const wy = rows[oy * inH + iy];
        if (wy === 0) continue;
        for (let ix = 0; ix < inW; ix++) m[base + iy * inW + ix] += wy * cols[ox * inW + ix];
      }
    }
  }
  return m;
}

const A = -0.75; // torch's cubic convolution coefficient (Pillow uses -0.5)

function cubic1(x: number): number {
  return ((A + 2) * x - (A + 3)) * x * x + 1; // |x| <= 1
}
function cubic2(x: number): number {
  return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; // 1 < |x| < 2
}

/** [out, in] weights of one axis; taps outside the input are clamped to the border, as torch does. */
function axisWeights(inSize: number, outSize: number): Float64Array {
  const w = new Float64Array(outSize * inSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const src = (o + 0.5) * scale - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    const taps = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)];
    for (let k = 0; k < 4; k++) {
      const i = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      w[o * inSize + i] += taps[k];
    }
  }
  return w;
}
