import * as tf from '../../tf';
import { Block, decodeBlock } from '../../io/blocks';
import { DType } from '../../io/dtype';
import { WASM_BASE64 } from './decode_wasm';

/** What this needs of tfjs-backend-wasm's Emscripten module: its memory and allocator. */
interface EmscriptenHeap {
  asm?: { memory?: unknown };
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  HEAPU8: Uint8Array;
}

interface Kernels {
  f16_to_f32(src: number, dst: number, n: number): void;
  bf16_to_f32(src: number, dst: number, n: number): void;
  /** kind: 0 float32, 1 float16, 2 bfloat16. */
  transpose(src: number, kind: number, cols: number, r0: number, nr: number, c0: number, nc: number, dst: number): void;
}

// (The project's TS lib has no WebAssembly types; Node and browsers have the global.)
interface WasmApi {
  Memory: new (...args: never[]) => object;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Kernels };
}
const WebAssemblyApi = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let compiled: object | null | undefined;
function kernelModule(): object | null {
  if (compiled === undefined) {
    try {
      compiled = WebAssemblyApi ? new WebAssemblyApi.Module(Uint8Array.from(Buffer.from(WASM_BASE64, 'base64'))) : null;
    } catch {
      compiled = null; // no wasm SIMD here: the JS path decodes instead
    }
  }
  return compiled;
}

const KIND: Partial<Record<DType, number>> = { F32: 0, F16: 1, BF16: 2 };

/**
 * Decodes checkpoint tensors inside the wasm backend's own heap with a small SIMD kernel
 * (kernels/decode.wat: F16/BF16 -> F32 and 4x4-register transposes, decoding as they move): the loader
 * reads a tensor's bytes into `input` (a heap buffer) and the kernel writes each block straight into
 * the variables' memory, one pass per block, faster than the JS path (figures: docs/performance.md). Null
 * (use the JS path) off wasm, on a build whose memory is not reachable, or without wasm SIMD.
 */
export class WasmBlockDecoder {
  private constructor(
    private readonly heap: EmscriptenHeap,
    private readonly kernels: Kernels,
    private readonly inputPtr: number,
    private readonly inputBytes: number,
  ) {}

  /**
   * An input buffer for tensors of up to `maxBytes` in the file. Allocated here, never while decoding,
   * so heap views taken between calls stay valid.
   */
  static create(maxBytes: number): WasmBlockDecoder | null {
    if (tf.getBackend() !== 'wasm' || !WebAssemblyApi) return null;
    const heap = (tf.backend() as unknown as { wasm: EmscriptenHeap }).wasm;
    const memory = heap.asm?.memory;
    const module = kernelModule();
    if (!module || !(memory instanceof WebAssemblyApi.Memory)) return null;
    let kernels: Kernels;
    try {
      kernels = new WebAssemblyApi.Instance(module, { env: { memory } }).exports;
    } catch {
      return null; // e.g. the threaded build's shared memory, which this module does not declare
    }
    const inputPtr = heap._malloc(Math.max(16, maxBytes)) >>> 0; // malloc aligns to 8+: every dtype's views are aligned
    return inputPtr ? new WasmBlockDecoder(heap, kernels, inputPtr, maxBytes) : null;
  }

  /** The heap buffer to read the next tensor's `bytes` into; a view, valid until the next tfjs allocation. */
  input(bytes: number): Uint8Array {
    if (bytes > this.inputBytes)
      throw new RangeError(`${bytes} bytes do not fit the ${this.inputBytes}-byte input buffer`);
    return this.heap.HEAPU8.subarray(this.inputPtr, this.inputPtr + bytes);
  }

  /**
   * Writes each block of the tensor now in `input` (`dtype`, a row-major matrix with `cols` columns)
   * into the matching `outs` view of the heap, as `decodeBlock` does.
   */
  decode(dtype: DType, input: Uint8Array, cols: number, blocks: Block[], outs: Float32Array[], name: string): void {
    const heap = this.heap.HEAPU8;
    const onHeap = (a: ArrayBufferView) => a.buffer === heap.buffer;
    const kind = KIND[dtype];
    if (kind === undefined || !onHeap(input) || !outs.every(onHeap) || input.byteOffset % 4 !== 0) {
      blocks.forEach((b, j) => decodeBlock(dtype, input, cols, b, outs[j], name));
      return;
    }
    const size = kind === 0 ? 4 : 2;
    // The kernels trust their pointers: check every block against the tensor and its output first.
    blocks.forEach((b, j) => {
      if ((b.r0 + b.nr - 1) * cols + b.c0 + b.nc > input.byteLength / size)
        throw new RangeError(`tensor ${JSON.stringify(name)}: block outside the tensor`);
      if (outs[j].length < b.nr * b.nc)
        throw new RangeError(
          `tensor ${JSON.stringify(name)}: a ${b.nr}x${b.nc} block does not fit an array of ${outs[j].length}`,
        );
    });
    const src = input.byteOffset;
    const at = (r: number, c: number) => src + (r * cols + c) * size;
    const copyRow = (from: number, to: number, n: number) => {
      if (kind === 0) heap.copyWithin(to, from, from + n * 4);
      else if (kind === 1) this.kernels.f16_to_f32(from, to, n);
      else this.kernels.bf16_to_f32(from, to, n);
    };
    blocks.forEach((b, j) => {
      const dst = outs[j].byteOffset;
      if (b.transposed) this.kernels.transpose(src, kind, cols, b.r0, b.nr, b.c0, b.nc, dst);
      else if (b.nc === cols) copyRow(at(b.r0, 0), dst, b.nr * cols);
      else for (let r = 0; r < b.nr; r++) copyRow(at(b.r0 + r, b.c0), dst + r * b.nc * 4, b.nc);
    });
  }

  dispose(): void {
    this.heap._free(this.inputPtr);
  }
}
