/**
 * The wasm backend's GEMM: our own SGEMM kernel (kernels/gemm.wat) running on tfjs-backend-wasm's own
 * heap, or tfjs's matMul (XNNPACK). Chosen once per thread (`chooseGemm`, at backend start):
 * - `fma`: the kernel with `f32x4.relaxed_madd` (WebAssembly relaxed SIMD: one FMA instruction on
 *   x86 with FMA3 and on ARM). Node 20 ships relaxed SIMD behind a V8 flag, set here before use.
 * - `mul-add`: the same kernel with a multiply and an add, for engines without relaxed SIMD.
 * - `xnnpack`: tfjs's own matMul.
 * `LLAVA_VISION_GEMM=auto|fma|mul-add|xnnpack` forces one (default `auto`: the first that runs here).
 *
 * The kernel reads every operand where tfjs keeps it and writes the output tensor in place: weights
 * are never packed or copied (the operand read in panels, usually the activation, is packed per call
 * into a reused heap buffer). See `gemm` for the operation and docs/performance.md for the design.
 */
import * as v8 from 'v8';
import * as tf from '../../tf';
import { ConfigError } from '../../errors';
import { WASM_BASE64 as FMA_WASM } from './gemm_wasm';
import { WASM_BASE64 as MUL_ADD_WASM } from './gemm_muladd_wasm';

export type GemmName = 'fma' | 'mul-add' | 'xnnpack';
export const GEMM_NAMES: readonly GemmName[] = ['fma', 'mul-add', 'xnnpack'];
export type GemmChoice = 'auto' | GemmName;
export const GEMM_CHOICES: readonly GemmChoice[] = ['auto', 'fma', 'mul-add', 'xnnpack'];
export const GEMM_ENV_VAR = 'LLAVA_VISION_GEMM';

/** How the weight operand `w` of `gemm` is stored: [N, K] (a torch Linear's [out, in]) or [K, N]. */
export type WeightLayout = 'out-in' | 'in-out';

export const GEMM_KERNEL = 'LlavaVisionGemm';

/** The kernel's attributes: the weights' layout, which build of the kernel runs it, which operand is packed. */
export interface GemmAttrs {
  layout: WeightLayout;
  gemm: Exclude<GemmName, 'xnnpack'>;
  /** `out-in` only: pack the inputs x (true) or the weights (false) into panels; null: the smaller. */
  packInputs: boolean | null;
}

export interface GemmOptions {
  /**
   * `out-in` only: which operand the kernel packs into panels (the other is read in place). Pack `x`
   * when it is multiplied by several weights in a row (a Linear's parts, q/k/v): the packed copy is
   * reused while the same tensor comes again. Default: the smaller.
   */
  pack?: 'x' | 'w';
}

/**
 * Cache blocking (see gemm.wat): KC rows of the panel operand by NC of its columns per block. KC is
 * also the length of each block's multiply-add chain (the summation order: see `gemm`).
 */
export const GEMM_BLOCK_K = 256;
const KC = GEMM_BLOCK_K;
const NC = 256;
/** A row-major [K, N] operand is read in place (not packed) when N is a multiple of 8 up to this. */
const DIRECT_MAX_N = 64;
/** The packing buffer is kept between calls up to this size (bytes); a larger one is freed after its call. */
const KEEP_PACK_BYTES = 16 << 20;

/** The kernel module's exports (gemm.wat), also what the tests drive on their own memory. */
export interface GemmExports {
  gemm(
    a: number,
    lda: number,
    b: number,
    bpanel: number,
    bk: number,
    c: number,
    ldc: number,
    trans: number,
    m: number,
    n: number,
    k: number,
    add: number,
    kc: number,
    nc: number,
    scratch: number,
  ): void;
  pack_t(x: number, ldx: number, rows: number, k: number, dst: number): void;
  pack_n(w: number, ldw: number, k: number, n: number, dst: number): void;
}

// (The project's TS lib has no WebAssembly types; Node and browsers have the global.)
interface WasmApi {
  Memory: new (...args: never[]) => object;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
  validate(bytes: Uint8Array): boolean;
}
const WebAssemblyApi = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

/** A minimal module using f32x4.relaxed_madd: (func (param v128 v128 v128) (result v128)). */
const RELAXED_PROBE = Uint8Array.from(Buffer.from('AGFzbQEAAAABCAFgA3t7ewF7AwIBAAoNAQsAIAAgASAC/YUCCw==', 'base64'));

let relaxedSimd: boolean | undefined;

/**
 * True when this engine runs relaxed SIMD, enabling it first where Node needs a V8 flag (Node 18–21:
 * `--experimental-wasm-relaxed-simd`; on from Node 22). V8's flags are per process and apply to modules
 * compiled after they are set; the flag is only set when the probe module does not validate without it.
 */
export function enableRelaxedSimd(): boolean {
  if (relaxedSimd !== undefined) return relaxedSimd;
  relaxedSimd = false;
  if (!WebAssemblyApi) return false;
  try {
    if (!WebAssemblyApi.validate(RELAXED_PROBE)) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    relaxedSimd = WebAssemblyApi.validate(RELAXED_PROBE);
  } catch {
    relaxedSimd = false;
  }
  return relaxedSimd;
}

function parseChoice(value: string | undefined): GemmChoice {
  if (value === undefined || value === '') return 'auto';
  if ((GEMM_CHOICES as readonly string[]).includes(value)) return value as GemmChoice;
  throw new ConfigError(`${GEMM_ENV_VAR}="${value}" is not a GEMM (choose from ${GEMM_CHOICES.join(', ')})`);
}

/** The wasm module of each kernel build, compiled once per thread (null: this engine cannot run it). */
const compiled = new Map<'fma' | 'mul-add', object | null>();
function kernelModule(name: 'fma' | 'mul-add'): object | null {
  if (!compiled.has(name)) {
    let module: object | null = null;
    if (WebAssemblyApi && (name === 'mul-add' || enableRelaxedSimd())) {
      try {
        module = new WebAssemblyApi.Module(
          Uint8Array.from(Buffer.from(name === 'fma' ? FMA_WASM : MUL_ADD_WASM, 'base64')),
        );
      } catch {
        module = null; // no wasm SIMD in this engine
      }
    }
    compiled.set(name, module);
  }
  return compiled.get(name)!;
}

/** What the kernel needs of tfjs-backend-wasm: its Emscripten heap and the tensors' memory. */
interface WasmBackend {
  wasm: { asm?: { memory?: unknown }; _malloc(bytes: number): number; _free(ptr: number): void };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

/** A packed operand left in the packing buffer: reused while the same tensor is packed the same way again. */
interface PackedKey {
  dataId: object;
  how: 't' | 'n';
  rows: number;
  cols: number;
}

/** One thread's kernel instance on one wasm backend's memory, with its packing buffer and scratch tile. */
class GemmInstance {
  private packPtr = 0;
  private packBytes = 0;
  private packed: PackedKey | null = null;

  constructor(
    readonly name: Exclude<GemmName, 'xnnpack'>,
    private readonly heap: WasmBackend['wasm'],
    private readonly kernel: GemmExports,
    private readonly scratch: number,
  ) {}

  static create(name: 'fma' | 'mul-add', backend: WasmBackend): GemmInstance | null {
    const module = kernelModule(name);
    const memory = backend.wasm?.asm?.memory;
    if (!module || !WebAssemblyApi || !(memory instanceof WebAssemblyApi.Memory)) return null;
    let kernel: GemmExports;
    try {
      kernel = new WebAssemblyApi.Instance(module, { env: { memory } }).exports as GemmExports;
    } catch {
      return null; // e.g. the threaded build's shared memory, which this module does not declare
    }
    const scratch = backend.wasm._malloc(128) >>> 0;
    return scratch ? new GemmInstance(name, backend.wasm, kernel, scratch) : null;
  }

  /** The packing buffer, at least `bytes` long (its contents are lost when it grows). */
  private buffer(bytes: number): number {
    if (bytes > this.packBytes) {
      if (this.packPtr) this.heap._free(this.packPtr);
      this.packPtr = 0;
      this.packBytes = 0;
      this.packed = null;
      const ptr = this.heap._malloc(bytes) >>> 0;
      if (!ptr) throw new RangeError(`${GEMM_KERNEL}: cannot allocate ${bytes} bytes for a packed operand`);
      this.packPtr = ptr;
      this.packBytes = bytes;
    }
    return this.packPtr;
  }

  /** Frees a packing buffer larger than the one kept between calls. */
  trim(): void {
    if (this.packBytes > KEEP_PACK_BYTES) {
      this.heap._free(this.packPtr);
      this.packPtr = 0;
      this.packBytes = 0;
      this.packed = null;
    }
  }

  /**
   * Panels of 8 of `rows` (how 't': the rows of a row-major [rows, cols] matrix, so B = Xᵀ) or of
   * `cols` (how 'n': the columns of a row-major [rows, cols] matrix, B = W), at `at` in the heap.
   * Returns the buffer; the tensor packed last is not packed again.
   */
  pack(dataId: object, at: number, how: 't' | 'n', rows: number, cols: number): number {
    const p = this.packed;
    if (p && p.dataId === dataId && p.how === how && p.rows === rows && p.cols === cols) return this.packPtr;
    const [panels, k] = how === 't' ? [Math.ceil(rows / 8), cols] : [Math.ceil(cols / 8), rows];
    const dst = this.buffer(panels * k * 32);
    if (how === 't') this.kernel.pack_t(at, cols * 4, rows, cols, dst);
    else this.kernel.pack_n(at, cols * 4, rows, cols, dst);
    this.packed = { dataId, how, rows, cols };
    return dst;
  }

  /** C (+)= A·B with A row-major in place and B in panels (see gemm.wat). */
  run(
    a: number,
    lda: number,
    b: number,
    bpanel: number,
    bk: number,
    c: number,
    ldc: number,
    trans: boolean,
    m: number,
    n: number,
    k: number,
    add: boolean,
  ): void {
    this.kernel.gemm(a, lda, b, bpanel, bk, c, ldc, trans ? 1 : 0, m, n, k, add ? 1 : 0, KC, NC, this.scratch);
  }
}

let choice: GemmChoice | null = null;
type OwnGemmName = Exclude<GemmName, 'xnnpack'>;
/** Per wasm backend object (one per thread): its kernel instances (null: that build cannot run there). */
const instances = new WeakMap<object, Map<OwnGemmName, GemmInstance | null>>();

function checkedChoice(wanted: GemmChoice): GemmChoice {
  const relaxed = wanted === 'fma' || wanted === 'auto' ? enableRelaxedSimd() : false;
  if (wanted === 'fma' && !relaxed)
    throw new ConfigError(
      `${GEMM_ENV_VAR}=fma: this JavaScript engine does not run WebAssembly relaxed SIMD (use mul-add or xnnpack)`,
    );
  return wanted;
}

/**
 * Reads `LLAVA_VISION_GEMM` (once per thread) and, unless it says `xnnpack`, enables relaxed SIMD:
 * called when the wasm backend is chosen, before tfjs-backend-wasm compiles its module. A forced
 * `fma` that this engine cannot run is a ConfigError.
 */
export function chooseGemm(): GemmChoice {
  choice ??= checkedChoice(parseChoice(process.env[GEMM_ENV_VAR]));
  return choice;
}

/**
 * Switches this thread's GEMM (tools and tests: e.g. both GEMMs in one benchmark process). Layers
 * store their weights for the GEMM of when they were built, so run each model under its own.
 */
export function setGemmChoice(wanted: GemmChoice): void {
  choice = checkedChoice(wanted);
}

function instanceOf(backend: object, name: OwnGemmName): GemmInstance | null {
  let byName = instances.get(backend);
  if (!byName) instances.set(backend, (byName = new Map<OwnGemmName, GemmInstance | null>()));
  if (!byName.has(name)) byName.set(name, GemmInstance.create(name, backend as WasmBackend));
  return byName.get(name)!;
}

/** Our kernel on the active backend, or null (not wasm, or XNNPACK chosen). */
function activeInstance(): GemmInstance | null {
  if (tf.engine().backendName !== 'wasm') return null;
  const wanted = chooseGemm();
  if (wanted === 'xnnpack') return null;
  const backend = tf.backend();
  for (const name of wanted === 'auto' ? (['fma', 'mul-add'] as const) : [wanted]) {
    const instance = instanceOf(backend, name);
    if (instance) return instance;
  }
  if (wanted === 'auto') return null;
  throw new ConfigError(
    `${GEMM_ENV_VAR}=${wanted}: the kernel cannot run on this wasm backend (no wasm SIMD, or a memory it cannot import); use xnnpack`,
  );
}

/** The GEMM the active backend runs: `fma`, `mul-add` or `xnnpack` on wasm; null on other backends. */
export function activeGemm(): GemmName | null {
  if (tf.engine().backendName !== 'wasm') return null;
  return activeInstance()?.name ?? 'xnnpack';
}

/**
 * The GEMM a wasm backend started now would run, without starting one (inspect): forced by
 * LLAVA_VISION_GEMM, else the first this engine can run.
 */
export function plannedGemm(): { name: GemmName; forced: boolean } {
  const wanted = chooseGemm();
  if (wanted !== 'auto') return { name: wanted, forced: true };
  return { name: kernelModule('fma') ? 'fma' : kernelModule('mul-add') ? 'mul-add' : 'xnnpack', forced: false };
}

/** Whether layers built now should store their weights for our kernel (see Linear). */
export function usesOwnGemm(): boolean {
  return activeInstance() !== null;
}

/** A GEMM for logs and reports: its LLAVA_VISION_GEMM name and what it is. */
export function describeGemm(name: GemmName): string {
  return `${name} (${name === 'fma' ? 'own kernel, relaxed-SIMD FMA' : name === 'mul-add' ? 'own kernel, SIMD mul + add' : "tfjs's XNNPACK"})`;
}

/**
 * Σ_j x_j · op(w_j): x_j [M, K_j], w_j [N, K_j] (`out-in`: op is the transpose, a torch Linear's weight)
 * or [K_j, N] (`in-out`); [M, N]. The products are summed in order of j (and of k within each),
 * one rounding per multiply-add, so the result is the same bits from run to run. On wasm with our kernel
 * chosen this is one kernel call; elsewhere tfjs's matMul (XNNPACK on wasm: non-transposed operands
 * only, so an `out-in` weight is transposed first) and addN. Differentiable.
 */
export function gemm(
  xs: tf.Tensor2D[],
  ws: tf.Tensor2D[],
  layout: WeightLayout,
  options: GemmOptions = {},
): tf.Tensor2D {
  if (xs.length === 0 || xs.length !== ws.length) throw new Error(`gemm: ${xs.length} inputs for ${ws.length} weights`);
  const n = layout === 'out-in' ? ws[0].shape[0] : ws[0].shape[1];
  xs.forEach((x, j) => {
    const w = ws[j];
    const [wn, wk] = layout === 'out-in' ? w.shape : [w.shape[1], w.shape[0]];
    if (x.shape[0] !== xs[0].shape[0] || x.shape[1] !== wk || wn !== n) {
      throw new Error(`gemm: cannot multiply [${x.shape.join(', ')}] by a ${layout} weight [${w.shape.join(', ')}]`);
    }
  });
  const instance = activeInstance();
  if (instance) {
    // Inputs as an array (x0, w0, x1, w1, ...): the gradient saves them all (saveAllInputs), as AddN's does.
    const inputs = xs.flatMap((x, j) => [x, ws[j]]) as unknown as tf.NamedTensorMap;
    const attrs: GemmAttrs = {
      layout,
      gemm: instance.name,
      packInputs: options.pack === undefined ? null : options.pack === 'x',
    };
    return tf.engine().runKernel<tf.Tensor2D>(GEMM_KERNEL, inputs, attrs as unknown as tf.NamedAttrMap);
  }
  return tf.tidy(() => {
    const terms = xs.map((x, j) => tf.matMul<tf.Tensor2D>(x, layout === 'out-in' ? tf.transpose(ws[j]) : ws[j]));
    return terms.length === 1 ? terms[0] : tf.addN(terms);
  });
}

/** The wasm kernel: one output, every part's product accumulated into it in place. */
function gemmOnWasm(
  inputs: tf.TensorInfo[],
  backend: WasmBackend,
  { layout, gemm, packInputs }: GemmAttrs,
): tf.TensorInfo {
  const instance = instanceOf(backend, gemm);
  if (!instance) throw new Error(`${GEMM_KERNEL}: the ${gemm} kernel does not run on this backend`);
  const parts = inputs.length / 2;
  const m = inputs[0].shape[0];
  const n = layout === 'out-in' ? inputs[1].shape[0] : inputs[1].shape[1];
  const out = backend.makeOutput([m, n], 'float32');
  // Heap offsets, not views: the packing buffer may grow the heap below.
  const at = (t: tf.TensorInfo) => backend.typedArrayFromHeap(t).byteOffset;
  const c = at(out);
  if (m === 0 || n === 0) return out;
  let added = false;
  for (let j = 0; j < parts; j++) {
    const [x, w] = [inputs[2 * j], inputs[2 * j + 1]];
    const k = x.shape[1];
    if (k === 0) continue;
    if (layout === 'out-in') {
      // C = X·Wᵀ: one operand packed into panels, the other read in place. X packed: C is written
      // transposed, as Cᵀ = W·Xᵀ.
      if (packInputs ?? m < n) {
        const b = instance.pack(x.dataId, at(x), 't', m, k);
        instance.run(at(w), k * 4, b, k * 32, 32, c, n * 4, true, n, m, k, added);
      } else {
        const b = instance.pack(w.dataId, at(w), 't', n, k);
        instance.run(at(x), k * 4, b, k * 32, 32, c, n * 4, false, m, n, k, added);
      }
    } else if (n % 8 === 0 && n <= DIRECT_MAX_N) {
      instance.run(at(x), k * 4, at(w), 32, n * 4, c, n * 4, false, m, n, k, added);
    } else {
      const b = instance.pack(w.dataId, at(w), 'n', k, n);
      instance.run(at(x), k * 4, b, k * 32, 32, c, n * 4, false, m, n, k, added);
    }
    added = true;
  }
  if (!added) backend.typedArrayFromHeap(out).fill(0);
  instance.trim();
  return out;
}

let registered = false;

/** Registers the kernel (forward on wasm, gradient for all) once. */
export function registerGemmKernel(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: GEMM_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) =>
      gemmOnWasm(
        inputs as unknown as tf.TensorInfo[],
        backend as unknown as WasmBackend,
        attrs as unknown as GemmAttrs,
      ),
  });
  tf.registerGradient({
    kernelName: GEMM_KERNEL,
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs) => {
      const { layout } = attrs as unknown as GemmAttrs;
      const g = dy as tf.Tensor2D;
      const grads: Record<string, () => tf.Tensor> = {};
      for (let j = 0; j < saved.length / 2; j++) {
        const [x, w] = [saved[2 * j] as tf.Tensor2D, saved[2 * j + 1] as tf.Tensor2D];
        grads[2 * j] = () => (layout === 'out-in' ? tf.matMul(g, w) : tf.matMul(g, w, false, true));
        grads[2 * j + 1] = () => (layout === 'out-in' ? tf.matMul(g, x, true, false) : tf.matMul(x, g, true, false));
      }
      return grads;
    },
  });
}
registerGemmKernel();
