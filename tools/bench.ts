/**
 * Benchmark of LLaVA-1.5's vision side at full size: ViT-L/14-336 + mlp2x_gelu 1024→4096→4096, with the
 * deterministic generator's weights (weights/generated/vitl14_336{,_f16}, written on first use; not a
 * trained model, same shapes and cost).
 *
 *   npm run bench [-- --json] [--batch N] [--dtype F32|F16] [--reps N] [--vs-torch] [--workers N] [--backend wasm|cpu|tensorflow|webgpu] [--layers N]
 *   npm run bench -- --threads 1,2 [--gemm xnnpack,fma] [--vs-torch] [--reps N] [--json]   (the tensor-parallel forward: tools/bench_threads.ts)
 *   npm run bench -- --from-json REPORT.json     (the table of a saved --json report)
 *
 * Reports: checkpoint load time, read time and RSS (F32 and F16 files, each in a fresh process);
 * per-image latency at batch 1 (median of --reps after a warm-up) of the LLaVA path (select layer −2,
 * `patch`, projector) and of the full tower with all hidden states; per-image time at batch N; GFLOP/s
 * (analytic FLOP count); the GEMM ceiling: the forward's own GEMM calls replayed alone in this process
 * (tools/gemm_ceiling.ts), and the forward's fraction of it; the GEMM and non-GEMM shares of the forward;
 * peak RSS during the forwards; tf.memory().numTensors before/after; backend and threads. With
 * --vs-torch, tools/bench_torch.py runs the same weights in the torch of /usr/bin/python3 or of
 * $LLAVA_VISION_PYTHON (if importable), between two sets of our own runs, and the ratio is taken within
 * this run. With --workers N, an encode job of max(4, batch) images runs with 1 and with N model
 * instances (fresh process each), timed from the loaded model to the last image, with the process's
 * peak RSS.
 * On webgpu the table also names the adapter; the GEMM ceiling and GEMM share are not measured there
 * (kernel calls only enqueue GPU work: timing them needs GPU timestamp queries). `--layers N` runs
 * ViT-L's first N encoder layers only (same shapes per layer; for slow adapters such as llvmpipe).
 * Without --threads, the model runs on one thread (`threads: 1`): the single-thread figures above.
 * Timings on shared 2-core VMs drift: compare figures from one run only.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as tf from '../src/tf';
import { encodePixelValuesAsync } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { BackendChoice, prefaultMemory } from '../src/backend';
import { describeAdapter } from '../src/gpu_adapters';
import { webGpuAdapter } from '../src/webgpu';
import { SafetensorsFile } from '../src/io/safetensors';
import { GemmMeter, GemmTotals, gemmRate, gemmRates, replayGemms } from './gemm_ceiling';
import { fmaPeakGflops, measureClockGHz } from './cpu_clock';
import { GenDType, writeFullSizeCase } from './make_checkpoint';
import { packageRoot } from '../src/version';
import {
  ThreadsReport,
  benchThreads,
  childThreadsLoad,
  childThreadsServe,
  parseGemmList,
  parseThreadList,
  printThreads,
} from './bench_threads';
import { GemmChoice, GemmName, activeGemm, describeGemm } from '../src/model/kernels/gemm';

const CASE = 'vitl14_336_generated_sel-2_patch';
const IMAGE = 'astronaut.png';

interface Options {
  json: boolean;
  batch: number;
  dtype: GenDType;
  reps: number;
  vsTorch: boolean;
  workers: number;
  backend?: BackendChoice;
  /** Encoder layers of ViT-L to run (default all 24). */
  layers?: number;
  child?: 'load' | 'workers' | 'touch' | 'threads-load' | 'threads-serve';
  /** --threads: the thread counts of the tensor-parallel bench. */
  threads?: number[];
  /** --gemm: the GEMMs the tensor-parallel bench compares (kernels/gemm.ts). */
  gemms?: GemmChoice[];
  fromJson?: string;
  touchBytes?: number;
  touchMethod?: 'pool' | 'fill';
}

function parseArgs(argv: string[]): Options {
  const o: Options = { json: false, batch: 4, dtype: 'F32', reps: 3, vsTorch: false, workers: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--json') o.json = true;
    else if (a === '--vs-torch') o.vsTorch = true;
    else if (a === '--batch') o.batch = Number(value());
    else if (a === '--reps') o.reps = Number(value());
    else if (a === '--dtype') o.dtype = value().toUpperCase() as GenDType;
    else if (a === '--backend') o.backend = value() as BackendChoice;
    else if (a === '--workers') o.workers = Number(value());
    else if (a === '--layers') o.layers = Number(value());
    else if (a === '--threads') o.threads = parseThreadList(value());
    else if (a === '--gemm') o.gemms = parseGemmList(value());
    else if (a === '--from-json') o.fromJson = value();
    else if (a === '--child') o.child = value() as Options['child'];
    else if (a === '--touch-bytes') o.touchBytes = Number(value());
    else if (a === '--touch-method') o.touchMethod = value() as 'pool' | 'fill';
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run bench -- [--json] [--batch N] [--dtype F32|F16] [--reps N] [--vs-torch] [--workers N] [--backend wasm|cpu|tensorflow|webgpu] [--layers N] [--threads 1,2 [--gemm xnnpack,fma]]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  if (!Number.isInteger(o.batch) || o.batch < 1) throw new Error(`--batch must be a positive integer`);
  if (!Number.isInteger(o.reps) || o.reps < 1) throw new Error(`--reps must be a positive integer`);
  if (o.layers !== undefined && (!Number.isInteger(o.layers) || o.layers < 2 || o.layers > 24))
    throw new Error(`--layers must be an integer in 2..24`);
  if (!Number.isInteger(o.workers) || o.workers < 1) throw new Error(`--workers must be a positive integer`);
  if (o.dtype !== 'F32' && o.dtype !== 'F16') throw new Error(`--dtype must be F32 or F16`);
  return o;
}

// ------------------------------------------------------------------------------------------ helpers

const MB = 2 ** 20;
const rssMB = () => process.memoryUsage().rss / MB;
const log = (o: Options, line: string) => (o.json ? process.stderr : process.stdout).write(line + '\n');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];

/** Peak RSS since the last `resetPeakRss()` (Linux: VmHWM; elsewhere the process-lifetime peak). */
function peakRssMB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS / 1024;
}
function resetPeakRss(): void {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    /* not Linux: the peak stays the lifetime peak */
  }
}

function wasmHeapMB(): number | null {
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8;
  return heap ? heap.length / MB : null;
}

/** The generated ViT-L/14-336 checkpoint (written on first use); with `layers`, a tower folder of its first layers. */
export function weightsFor(root: string, dtype: GenDType, layers?: number) {
  const caseModel = path.join(root, 'test', 'fixtures', 'cases', CASE, 'model');
  const out = path.join(
    root,
    'weights',
    'generated',
    dtype === 'F32' ? 'vitl14_336' : `vitl14_336_${dtype.toLowerCase()}`,
  );
  const gen = writeFullSizeCase(caseModel, out, dtype);
  return layers === undefined || layers === 24 ? gen : { ...gen, towerDir: firstLayers(gen.towerDir, layers) };
}

/** A tower folder whose config keeps the first `layers` encoder layers, next to the full one (the loader reads only the tensors the config needs). */
function firstLayers(towerDir: string, layers: number): string {
  const dir = `${towerDir}_${layers}_layers`;
  fs.mkdirSync(dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(towerDir, 'config.json'), 'utf8')) as {
    vision_config?: Record<string, unknown>;
  } & Record<string, unknown>;
  (config.vision_config ?? config).num_hidden_layers = layers;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  for (const f of fs.readdirSync(towerDir).filter((f) => f !== 'config.json')) {
    const link = path.join(dir, f);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join(towerDir, f), link);
  }
  return dir;
}

/** The adapter, when the backend is webgpu. */
function adapterName(backend: string): string | null {
  const adapter = backend === 'webgpu' ? webGpuAdapter() : null;
  return adapter ? describeAdapter(adapter) : null;
}

/** Reads the files once, start to end, into one reused buffer: the time to read them (page cache as it is). */
function readSeconds(files: string[]): number {
  const buf = Buffer.allocUnsafe(64 * MB);
  const t0 = performance.now();
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0) {
        /* read on */
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return (performance.now() - t0) / 1000;
}

// ---------------------------------------------------------------------------------- FLOPs per image

interface Flops {
  patch: number;
  layer: number;
  attention: number;
  projector: number;
  llava: number;
  full: number;
}

/** Analytic FLOPs (2 per multiply-add) of ViT-L/14-336 + mlp2x_gelu, per image. */
function countFlops(model: LlavaVision): Flops {
  const c = model.tower.config;
  const d = c.hiddenSize;
  const n = model.tower.numPatches;
  const t = n + 1;
  const patch = 2 * n * (c.numChannels * c.patchSize ** 2) * d;
  const attention = 2 * 2 * t * t * d; // QKᵀ and PV over all heads
  const layer = 2 * t * d * (3 * d) + 2 * t * d * d + 2 * 2 * t * d * c.intermediateSize + attention;
  let projector = 0;
  let width = model.tower.featureSize;
  for (const linear of model.projector?.linears ?? []) {
    projector += 2 * n * width * linear.outFeatures;
    width = linear.outFeatures;
  }
  const selected = model.tower.visionModel.visionModel.resolveHiddenStateIndex(model.tower.selectLayers[0]);
  return {
    patch,
    layer,
    attention,
    projector,
    llava: patch + selected * layer + projector,
    full: patch + c.numHiddenLayers * layer,
  };
}

// ------------------------------------------------------------------------------------- load (child)

interface LoadResult {
  dtype: GenDType;
  fileMB: number;
  readS: number;
  loadS: number;
  rssAfterLoadMB: number;
  peakRssLoadMB: number;
  wasmHeapMB: number | null;
  tensors: number;
  /** Bringing in fresh memory of the float32 weights' size, each in a fresh process (set by the parent): as the loader does, and by a first write from JS. */
  touchS?: number;
  touchFillS?: number;
  weightsMB?: number;
}

async function childLoad(o: Options): Promise<void> {
  const gen = weightsFor(packageRoot(), o.dtype, o.layers);
  const files = [gen.tower.file, gen.projector.file];
  const fileMB = files.reduce((s, f) => s + fs.statSync(f).size, 0) / MB;
  readSeconds(files); // same page-cache state for both measurements
  const readS = readSeconds(files);
  const { initBackend } = await import('../src/backend');
  await initBackend({ backend: o.backend, log: null });
  resetPeakRss();
  const t0 = performance.now();
  const model = await LlavaVision.load(gen.llavaDir, {
    visionTower: gen.towerDir,
    backend: o.backend,
    log: null,
    threads: 1,
  });
  const loadS = (performance.now() - t0) / 1000;
  const r: LoadResult = {
    dtype: o.dtype,
    fileMB,
    readS,
    loadS,
    rssAfterLoadMB: rssMB(),
    peakRssLoadMB: peakRssMB(),
    wasmHeapMB: wasmHeapMB(),
    tensors: tf.memory().numTensors,
  };
  model.dispose();
  process.stdout.write(JSON.stringify(r) + '\n');
}

/**
 * Brings `--touch-bytes` of fresh wasm memory in and prints the time: the page faults any loader pays to
 * place the weights (the file read goes into one reused buffer, so it pays none). `--touch-method pool`
 * is what the loader does (prefaultMemory: /dev/zero read into it on libuv's threads); `fill` is the
 * first write from JS, page by page on one thread. On a VM neither is free.
 */
async function childTouch(o: Options): Promise<void> {
  const bytes = o.touchBytes ?? 0;
  // (The project's TS lib has no WebAssembly types; Node has the global.)
  type WasmMemory = { grow(pages: number): number; buffer: ArrayBuffer };
  const { WebAssembly: wasm } = globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory };
  };
  const memory = new wasm.Memory({ initial: 1, maximum: 65536 });
  memory.grow(Math.ceil(bytes / 65536));
  const view = new Uint8Array(memory.buffer, 0, bytes);
  const t0 = performance.now();
  if (o.touchMethod === 'fill') view.fill(1);
  else await prefaultMemory([view]);
  process.stdout.write(JSON.stringify({ touchS: (performance.now() - t0) / 1000 }) + '\n');
}

function touchInChild(bytes: number, method: 'pool' | 'fill'): number {
  const r = spawnSync(
    process.execPath,
    [__filename, '--child', 'touch', '--touch-bytes', String(bytes), '--touch-method', method],
    { encoding: 'utf8' },
  );
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`memory touch measurement failed:\n${r.stderr}`);
  return (JSON.parse(line) as { touchS: number }).touchS;
}

function loadInChild(o: Options, dtype: GenDType): LoadResult {
  const args = [
    __filename,
    '--child',
    'load',
    '--dtype',
    dtype,
    ...(o.backend ? ['--backend', o.backend] : []),
    ...(o.layers ? ['--layers', String(o.layers)] : []),
  ];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 16 * MB });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`load measurement (${dtype}) failed:\n${r.stderr}`);
  return JSON.parse(line) as LoadResult;
}

// ---------------------------------------------------------------------------------- workers (child)

interface WorkersResult {
  workers: number;
  images: number;
  jobS: number;
  imagesPerMin: number;
  peakRssMB: number;
  identicalTo?: boolean;
}

/** An encode job of `batch` copies of the fixture image on `workers` instances; prints timing, peak RSS, an output digest. */
async function childWorkers(o: Options): Promise<void> {
  const root = packageRoot();
  const gen = weightsFor(root, o.dtype, o.layers);
  const model = await LlavaVision.load(gen.llavaDir, {
    visionTower: gen.towerDir,
    backend: o.backend,
    log: null,
    threads: 1,
  });
  const image = fixtureImage(root);
  const pixels = new Float32Array(o.batch * image.length);
  for (let i = 0; i < o.batch; i++) pixels.set(image, i * image.length);
  const s = model.tower.config.imageSize;
  resetPeakRss();
  const t0 = performance.now();
  const out = await encodePixelValuesAsync(model, pixels, [o.batch, 3, s, s], {
    outputs: ['projected'],
    workers: o.workers,
  });
  const jobS = (performance.now() - t0) / 1000;
  const digest = createHash('sha256');
  for (const k of Object.keys(out).sort()) digest.update(out[k].data.subarray(0));
  const r: WorkersResult & { digest: string } = {
    workers: o.workers,
    images: o.batch,
    jobS,
    imagesPerMin: (60 * o.batch) / jobS,
    peakRssMB: peakRssMB(),
    digest: digest.digest('hex'),
  };
  model.dispose();
  process.stdout.write(JSON.stringify(r) + '\n');
}

function workersInChild(o: Options, workers: number, images: number): WorkersResult & { digest: string } {
  const args = [
    __filename,
    '--child',
    'workers',
    '--workers',
    String(workers),
    '--batch',
    String(images),
    '--dtype',
    o.dtype,
    ...(o.backend ? ['--backend', o.backend] : []),
    ...(o.layers ? ['--layers', String(o.layers)] : []),
  ];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 16 * MB });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`workers measurement (${workers}) failed:\n${r.stderr}`);
  return JSON.parse(line) as WorkersResult & { digest: string };
}

/** The full-size case's pixel_values of astronaut.png, [3, 336, 336]. */
export function fixtureImage(root: string): Float32Array {
  const expected = SafetensorsFile.open(
    path.join(root, 'test', 'fixtures', 'cases', CASE, 'expected.subset.safetensors'),
  );
  try {
    return expected.readFloat32(`${IMAGE}.pixel_values`);
  } finally {
    expected.close();
  }
}

// ------------------------------------------------------------------------------------------- torch

interface TorchResult {
  threads: number;
  gemm: string;
  llava: { median_s: number; per_image_s: number[] };
  full?: { median_s: number };
}

/** The Python with torch the peer runs in: LLAVA_VISION_PYTHON (a GPU host's venv), else Debian's. */
const PYTHON = process.env.LLAVA_VISION_PYTHON || '/usr/bin/python3';

function torchAvailable(): boolean {
  const r = spawnSync(PYTHON, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  return r.status === 0;
}

function runTorch(o: Options, root: string, towerDir: string, llavaDir: string, threads: number): TorchResult {
  const script = path.join(root, 'tools', 'bench_torch.py');
  const args = [
    script,
    '--tower',
    towerDir,
    '--llava',
    llavaDir,
    '--reps',
    String(o.reps),
    '--threads',
    String(threads),
    '--modes',
    'llava,full',
  ];
  const r = spawnSync(PYTHON, args, {
    encoding: 'utf8',
    maxBuffer: 16 * MB,
    env: { ...process.env, OMP_NUM_THREADS: String(threads) },
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`tools/bench_torch.py failed:\n${r.stderr}`);
  return JSON.parse(line) as TorchResult;
}

// -------------------------------------------------------------------------------------------- main

interface Timed {
  seconds: number;
  gemm: GemmTotals;
}

/** The --json report (and what --from-json reads back). */
interface BenchReport {
  date: string;
  machine: { cpu: string | undefined; cores: number; memGB: number; node: string; platform: string };
  backend: string;
  adapter: string | null;
  layers: number;
  threads: string | number;
  simd: boolean | null;
  /** The GEMM the forward ran (wasm: kernels/gemm.ts), and the core's clock measured by tools/cpu_clock.ts. */
  gemm?: string | null;
  clockGHz?: number;
  tfjs: string;
  dtype: GenDType;
  reps: number;
  load: LoadResult[];
  rssAfterLoadMB: number;
  gflopPerImage: Record<'llava' | 'full' | 'recordedLlavaGemm' | 'patch' | 'perLayer' | 'projector', number>;
  firstForwardS: { llava: number; full: number };
  llava: {
    perImageS: number;
    runsS: number[];
    gflops: number;
    gemmCalls: number;
    gemmS: number | null;
    nonGemmShare: number | null;
    ceilingS: number | null;
    ceilingRunsS: number[];
    ceilingGflops: number | null;
    fractionOfCeiling: number | null;
  };
  full: { perImageS: number; runsS: number[]; gflops: number; gemmS: number | null; nonGemmShare: number | null };
  batch: { size: number; perImageS: number; imagesPerS: number; runsS: number[]; gflops: number };
  referenceGemmGflops: Record<string, number>;
  /** On wasm: the same shapes under each GEMM, interleaved (shape -> GEMM -> GFLOP/s). */
  referenceGemmByGemm?: Record<string, Record<string, number>>;
  /** The LLaVA forwards' GEMM calls per product shape: GFLOP/s. */
  forwardGemmByShape?: Record<string, number>;
  peakRssMB: Record<string, number>;
  wasmHeapMB: { afterWarmup: number | null; end: number | null };
  numTensors: { before: number; after: number };
  torch: {
    available: boolean;
    runs: { threads: number; gemm: string; llavaS: number; fullS: number | undefined }[];
    oursLlavaAfterS: number | null;
    oursLlavaAfterRunsS: number[];
  } | null;
  workers: (WorkersResult & { digest?: string })[] | null;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.fromJson) {
    // re-render a saved --json report, of either bench
    const saved = JSON.parse(fs.readFileSync(o.fromJson, 'utf8')) as BenchReport | ThreadsReport;
    return 'results' in saved ? printThreads(saved) : printTable(saved);
  }
  if (o.child === 'load') return childLoad(o);
  if (o.child === 'workers') return childWorkers(o);
  if (o.child === 'touch') return childTouch(o);
  const root = packageRoot();
  if (o.threads) {
    const gen = weightsFor(root, o.dtype, o.layers);
    const common = {
      llavaDir: gen.llavaDir,
      towerDir: gen.towerDir,
      backend: o.backend,
      image: fixtureImage(root),
      peakRssMB,
      resetPeakRss,
    };
    if (o.child === 'threads-load') return childThreadsLoad(common, o.threads[0]);
    if (o.child === 'threads-serve') return childThreadsServe(common, o.threads);
    const childArgs = (n: number) => [
      __filename,
      '--child',
      'threads-load',
      '--threads',
      String(n),
      '--dtype',
      o.dtype,
      ...(o.backend ? ['--backend', o.backend] : []),
      ...(o.layers ? ['--layers', String(o.layers)] : []),
    ];
    const torch =
      o.vsTorch && torchAvailable() ? (n: number) => runTorch(o, root, gen.towerDir, gen.llavaDir, n) : null;
    const warmCache = () => void readSeconds([gen.tower.file, gen.projector.file]);
    const serveArgs = (ns: number[]) => [
      __filename,
      '--child',
      'threads-serve',
      '--threads',
      ns.join(','),
      '--dtype',
      o.dtype,
      ...(o.backend ? ['--backend', o.backend] : []),
      ...(o.layers ? ['--layers', String(o.layers)] : []),
    ];
    return benchThreads({
      ...common,
      threads: o.threads,
      gemms: o.gemms ?? [],
      reps: o.reps,
      vsTorch: o.vsTorch,
      json: o.json,
      childArgs,
      serveArgs,
      torch,
      warmCache,
    });
  }

  log(o, `bench: weights (generated on first use) ...`);
  const [f32, f16] = [weightsFor(root, 'F32', o.layers), weightsFor(root, 'F16', o.layers)];
  const gen = o.dtype === 'F32' ? f32 : f16;

  log(o, `bench: load F32 and F16 checkpoints, each in a fresh process ...`);
  const weightsBytes = fs.statSync(f32.tower.file).size + fs.statSync(f32.projector.file).size; // the float32 weights a load places
  // With --layers the load reads only those layers' tensors: the floor of loading the whole file does not apply.
  const wholeFile = o.layers === undefined || o.layers === 24;
  const loads = (['F32', 'F16'] as GenDType[]).map((dt) => ({
    ...loadInChild(o, dt),
    ...(wholeFile
      ? {
          touchS: touchInChild(weightsBytes, 'pool'),
          touchFillS: touchInChild(weightsBytes, 'fill'),
          weightsMB: weightsBytes / MB,
        }
      : {}),
  }));

  const model = await LlavaVision.load(gen.llavaDir, { visionTower: gen.towerDir, backend: o.backend, threads: 1 });
  const backend = model.backend;
  // GPU kernel calls return before the work is done: only whole forwards (ending in a read) are timed there.
  const asyncKernels = backend === 'webgpu';
  const rssAfterLoad = rssMB();
  const tensorsBefore = tf.memory().numTensors;
  const flops = countFlops(model);
  const weights = [...model.tower.visionModel.visionModel.weights, ...(model.projector?.weights ?? [])].map((w) =>
    w.read(),
  );
  const meter = new GemmMeter(weights);

  const image = fixtureImage(root);
  const pixels = (b: number) => {
    const data = new Float32Array(b * image.length);
    for (let i = 0; i < b; i++) data.set(image, i * image.length);
    const s = model.tower.config.imageSize;
    return tf.tensor4d(data, [b, 3, s, s]);
  };
  const px1 = pixels(1);

  const runLlava = async (px: tf.Tensor4D) => {
    const out = model.encode(px, { outputs: ['projected'] });
    await out.projected!.data();
    out.projected!.dispose();
  };
  const runFull = async (px: tf.Tensor4D) => {
    const out = model.encode(px, { outputs: ['hidden_states', 'pooler_output'] });
    await Promise.all([...out.hiddenStates!, out.poolerOutput!].map((t) => t.data()));
    tf.dispose([...out.hiddenStates!, out.poolerOutput!]);
  };
  const timed = async (fn: () => Promise<void>): Promise<Timed> => {
    const t0 = performance.now();
    const { gemm } = await meter.measure(fn);
    return { seconds: (performance.now() - t0) / 1000, gemm };
  };

  log(o, `bench: warm-up (first forward) ...`);
  resetPeakRss();
  let t0 = performance.now();
  const { calls } = await meter.record(() => runLlava(px1));
  const firstLlavaS = (performance.now() - t0) / 1000;
  const peakLlavaMB = peakRssMB();
  const recordedFlops = calls.reduce((s, c) => s + c.flops, 0);
  resetPeakRss();
  t0 = performance.now();
  await runFull(px1);
  const firstFullS = (performance.now() - t0) / 1000;
  const peakFullMB = peakRssMB();
  const heapAfterWarmup = wasmHeapMB();

  const llava: Timed[] = [];
  const full: Timed[] = [];
  const ceiling: number[] = [];
  for (let r = 0; r < o.reps; r++) {
    log(o, `bench: round ${r + 1}/${o.reps}: LLaVA path, ${asyncKernels ? '' : 'GEMM replay, '}full tower ...`);
    llava.push(await timed(() => runLlava(px1)));
    if (!asyncKernels) ceiling.push(replayGemms(calls) / 1000);
    full.push(await timed(() => runFull(px1)));
  }

  log(o, `bench: batch ${o.batch} x ${o.reps} ...`);
  const pxB = pixels(o.batch);
  resetPeakRss();
  const batched: Timed[] = [];
  for (let r = 0; r < o.reps; r++) batched.push(await timed(() => runLlava(pxB)));
  const peakBatchMB = peakRssMB();
  pxB.dispose();

  let torch: { available: boolean; results: TorchResult[]; llavaAfter: Timed[] } | null = null;
  if (o.vsTorch) {
    torch = { available: torchAvailable(), results: [], llavaAfter: [] };
    if (torch.available) {
      for (const threads of [1, 2]) {
        log(o, `bench: PyTorch peer, ${threads} thread(s) ...`);
        torch.results.push(runTorch(o, root, gen.towerDir, gen.llavaDir, threads));
      }
      log(o, `bench: LLaVA path again (after torch, for the same-run ratio) ...`);
      for (let r = 0; r < o.reps; r++) torch.llavaAfter.push(await timed(() => runLlava(px1)));
    } else log(o, `bench: ${PYTHON} has no torch: --vs-torch skipped`);
  }

  px1.dispose();
  meter.dispose();
  const tensorsAfter = tf.memory().numTensors;
  const heapEnd = wasmHeapMB();
  model.dispose();

  let workerRuns: (WorkersResult & { digest?: string })[] | null = null;
  if (o.workers > 1) {
    const images = Math.max(4, o.batch);
    workerRuns = [1, o.workers].map((w) => {
      log(o, `bench: encode job of ${images} images with ${w} model instance(s), fresh process ...`);
      return workersInChild(o, w, images);
    });
    const first = workerRuns[0].digest;
    workerRuns = workerRuns.map(({ digest, ...r }) => ({ ...r, identicalTo: digest === first }));
  }

  // ---------------------------------------------------------------------------------------- report
  const llavaS = median(llava.map((x) => x.seconds));
  const llavaGemmS = asyncKernels ? null : median(llava.map((x) => x.gemm.ms / 1000));
  const ceilingS = asyncKernels ? null : median(ceiling);
  const fullS = median(full.map((x) => x.seconds));
  const fullGemmS = asyncKernels ? null : median(full.map((x) => x.gemm.ms / 1000));
  const batchS = median(batched.map((x) => x.seconds)) / o.batch;
  const wasm = backend === 'wasm';
  const referenceGemmGflops = {
    '577x1024x1024': await gemmRate(577, 1024, 1024),
    '577x1024x4096': await gemmRate(577, 1024, 4096),
    '577x4096x1024': await gemmRate(577, 4096, 1024),
  };
  const gemmName = activeGemm();
  const gemmsCompared: GemmName[] = wasm && gemmName ? [...new Set<GemmName>(['xnnpack', gemmName])] : [];
  const refShapes: [number, number, number][] = [
    [577, 1024, 1024],
    [577, 1024, 4096],
    [577, 4096, 1024],
    [2885, 1024, 1024],
  ];
  const byGemm = gemmsCompared.length > 1 ? await gemmRates(refShapes, gemmsCompared, Math.max(5, o.reps)) : null;
  const forwardByShape: Record<string, { ms: number; flops: number }> = {};
  for (const x of llava)
    for (const [k, v] of Object.entries(x.gemm.byShape)) {
      const acc = (forwardByShape[k] ??= { ms: 0, flops: 0 });
      acc.ms += v.ms;
      acc.flops += v.flops;
    }
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model,
      cores: os.cpus().length,
      memGB: +(os.totalmem() / 2 ** 30).toFixed(1),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    backend,
    adapter: adapterName(backend),
    layers: model.tower.config.numHiddenLayers,
    threads: wasm
      ? tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT')
        ? 'multi'
        : 1
      : backend === 'tensorflow'
        ? `TF default (${os.cpus().length} cores)`
        : backend === 'webgpu'
          ? 'GPU'
          : 1,
    simd: wasm ? tf.env().getBool('WASM_HAS_SIMD_SUPPORT') : null,
    gemm: gemmName && describeGemm(gemmName),
    clockGHz: await measureClockGHz(),
    tfjs: tf.version_core,
    dtype: o.dtype,
    reps: o.reps,
    load: loads,
    rssAfterLoadMB: rssAfterLoad,
    gflopPerImage: {
      llava: flops.llava / 1e9,
      full: flops.full / 1e9,
      recordedLlavaGemm: recordedFlops / 1e9,
      patch: flops.patch / 1e9,
      perLayer: flops.layer / 1e9,
      projector: flops.projector / 1e9,
    },
    firstForwardS: { llava: firstLlavaS, full: firstFullS },
    llava: {
      perImageS: llavaS,
      runsS: llava.map((x) => x.seconds),
      gflops: flops.llava / llavaS / 1e9,
      gemmCalls: llava[0].gemm.calls,
      gemmS: llavaGemmS,
      nonGemmShare: llavaGemmS === null ? null : 1 - llavaGemmS / llavaS,
      ceilingS,
      ceilingRunsS: ceiling,
      ceilingGflops: ceilingS === null ? null : recordedFlops / ceilingS / 1e9,
      fractionOfCeiling: ceilingS === null ? null : ceilingS / llavaS,
    },
    full: {
      perImageS: fullS,
      runsS: full.map((x) => x.seconds),
      gflops: flops.full / fullS / 1e9,
      gemmS: fullGemmS,
      nonGemmShare: fullGemmS === null ? null : 1 - fullGemmS / fullS,
    },
    batch: {
      size: o.batch,
      perImageS: batchS,
      imagesPerS: 1 / batchS,
      runsS: batched.map((x) => x.seconds),
      gflops: flops.llava / batchS / 1e9,
    },
    referenceGemmGflops,
    ...(byGemm
      ? {
          referenceGemmByGemm: Object.fromEntries(
            refShapes.map((sh, i) => [
              sh.join('x'),
              Object.fromEntries(gemmsCompared.map((g, j) => [g, byGemm[i][j]])),
            ]),
          ),
        }
      : {}),
    // (Not on webgpu: there a kernel call only enqueues the GPU's work.)
    forwardGemmByShape: asyncKernels
      ? undefined
      : Object.fromEntries(
          Object.entries(forwardByShape)
            .sort((a, b) => b[1].flops - a[1].flops)
            .map(([k, v]) => [k, v.flops / v.ms / 1e6]),
        ),
    peakRssMB: { llavaBatch1: peakLlavaMB, fullBatch1: peakFullMB, [`llavaBatch${o.batch}`]: peakBatchMB },
    wasmHeapMB: { afterWarmup: heapAfterWarmup, end: heapEnd },
    numTensors: { before: tensorsBefore, after: tensorsAfter },
    torch: torch && {
      available: torch.available,
      runs: torch.results.map((t) => ({
        threads: t.threads,
        gemm: t.gemm,
        llavaS: t.llava.median_s,
        fullS: t.full?.median_s,
      })),
      oursLlavaAfterS: torch.llavaAfter.length ? median(torch.llavaAfter.map((x) => x.seconds)) : null,
      oursLlavaAfterRunsS: torch.llavaAfter.map((x) => x.seconds),
    },
    workers: workerRuns,
  };
  if (o.json) {
    process.stdout.write(JSON.stringify(report, null, 1) + '\n');
    return;
  }
  printTable(report);
}

function printTable(r: BenchReport): void {
  const f = (x: number, d = 2) => x.toFixed(d);
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`| ${k} | ${v} |`);
  lines.push(
    `npm run bench — ${r.date.slice(0, 10)}, ${r.machine.cpu} (${r.machine.cores} cores, ${r.machine.memGB} GB), Node ${r.machine.node}, tfjs ${r.tfjs}`,
  );
  const layers = r.layers === undefined || r.layers === 24 ? '' : ` (first ${r.layers} of 24 encoder layers)`;
  lines.push(
    `backend ${r.backend}${r.simd === null ? '' : r.simd ? ' (SIMD)' : ' (no SIMD)'}${r.gemm ? `, GEMM ${r.gemm}` : ''}, threads ${r.threads}; ViT-L/14-336${layers} + mlp2x_gelu, generated ${r.dtype} weights; medians of ${r.reps} after a warm-up`,
  );
  if (r.adapter) lines.push(`adapter ${r.adapter}`);
  lines.push('');
  lines.push('| measure | value |');
  lines.push('|---|---|');
  for (const l of r.load) {
    if (r.layers !== undefined && r.layers < 24) {
      row(
        `load ${l.dtype} checkpoint (the tensors of ${r.layers} layers and the projector)`,
        `${f(l.loadS)} s; RSS after load ${f(l.rssAfterLoadMB, 0)} MB, peak during load ${f(l.peakRssLoadMB, 0)} MB`,
      );
      continue;
    }
    const fill = l.touchFillS === undefined ? '' : `; a first write from JS: ${f(l.touchFillS)} s`;
    const floor =
      l.touchS === undefined
        ? ''
        : `; floor = read + bringing in ${f(l.weightsMB ?? 0, 0)} MB of fresh memory (as the loader does: ${f(l.touchS)} s${fill}) = ${f(l.readS + l.touchS)} s, ×${f(l.loadS / (l.readS + l.touchS), 2)}`;
    row(
      `load ${l.dtype} checkpoint (${f(l.fileMB, 0)} MB)`,
      `${f(l.loadS)} s (file read ${f(l.readS)} s, ×${f(l.loadS / l.readS, 1)}${floor}); RSS after load ${f(l.rssAfterLoadMB, 0)} MB, peak during load ${f(l.peakRssLoadMB, 0)} MB`,
    );
  }
  const total = r.layers ?? 24;
  const notOnGpu = 'not measured (GPU kernel calls only enqueue work)';
  row(
    `LLaVA path, batch 1 (${total === 2 ? 'layer 1' : `layers 1–${total - 1}`}, patch, projector)`,
    `**${f(r.llava.perImageS)} s/image**, ${f(r.llava.gflops, 1)} GFLOP/s (${f(r.gflopPerImage.llava, 1)} GFLOP)`,
  );
  row(
    'GEMM ceiling (the same GEMM calls alone)',
    r.llava.ceilingS === null
      ? notOnGpu
      : `${f(r.llava.ceilingS)} s, ${f(r.llava.ceilingGflops ?? NaN, 1)} GFLOP/s → forward at **${f(100 * (r.llava.fractionOfCeiling ?? NaN), 1)}%** of it`,
  );
  row(
    'GEMM / non-GEMM share of the forward',
    r.llava.nonGemmShare === null
      ? `${notOnGpu} (${r.llava.gemmCalls} GEMM calls)`
      : `${f(100 * (1 - r.llava.nonGemmShare), 1)}% / ${f(100 * r.llava.nonGemmShare, 1)}% (${r.llava.gemmCalls} GEMM calls)`,
  );
  row(
    `full tower, batch 1 (${total} layers, all ${total + 1} hidden states, pooler)`,
    `${f(r.full.perImageS)} s/image, ${f(r.full.gflops, 1)} GFLOP/s${r.full.nonGemmShare === null ? '' : `; non-GEMM ${f(100 * r.full.nonGemmShare, 1)}%`}`,
  );
  row(
    `LLaVA path, batch ${r.batch.size}`,
    `${f(r.batch.perImageS)} s/image (${f(r.batch.imagesPerS * 60, 1)} images/min)`,
  );
  const firstNote =
    r.backend === 'webgpu'
      ? ' (compiles shaders)'
      : r.gemm && !r.gemm.startsWith('xnnpack')
        ? ''
        : ' (XNNPACK packs weights)';
  row(`first forward${firstNote}`, `LLaVA ${f(r.firstForwardS.llava)} s, full ${f(r.firstForwardS.full)} s`);
  row(
    'reference GEMM rates (cached weight)',
    Object.entries(r.referenceGemmGflops)
      .map(([k, v]) => `${k}: ${f(v, 1)}`)
      .join(', ') + ' GFLOP/s',
  );
  const peak = r.clockGHz ? fmaPeakGflops(r.clockGHz) : null;
  const ofPeak = (g: number) => (peak ? ` (${f((100 * g) / peak, 0)}%)` : '');
  if (r.referenceGemmByGemm) {
    row(
      `the same, each GEMM interleaved${peak ? `; % of the 128-bit FMA peak ${f(peak, 1)} GFLOP/s at ${f(r.clockGHz!)} GHz` : ''}`,
      Object.entries(r.referenceGemmByGemm)
        .map(([k, byG]) => {
          const [[ga, a], [gb, b]] = Object.entries(byG);
          return `${k}: ${ga} ${f(a, 1)}${ofPeak(a)}, ${gb} ${f(b, 1)}${ofPeak(b)}, ×${f(b / a)}`;
        })
        .join('; '),
    );
  }
  if (r.forwardGemmByShape)
    row(
      'GEMM rates in the LLaVA forward, by product (MxKxN, M ≥ N)',
      Object.entries(r.forwardGemmByShape)
        .slice(0, 8)
        .map(([k, v]) => `${k}: ${f(v, 1)}${ofPeak(v)}`)
        .join(', ') + ' GFLOP/s',
    );
  row('RSS after load (this process)', `${f(r.rssAfterLoadMB, 0)} MB`);
  row(
    'peak RSS during forward',
    Object.entries(r.peakRssMB)
      .map(([k, v]) => `${k} ${f(v, 0)} MB`)
      .join(', ') + (r.wasmHeapMB.end ? `; wasm heap ${f(r.wasmHeapMB.end, 0)} MB` : ''),
  );
  row('tf.memory().numTensors before / after', `${r.numTensors.before} / ${r.numTensors.after}`);
  if (r.torch) {
    if (!r.torch.available) row('PyTorch', `not available (${PYTHON} has no torch)`);
    for (const t of r.torch.runs) {
      row(
        `PyTorch ${t.gemm}, ${t.threads} thread(s), same run`,
        `LLaVA ${f(t.llavaS)} s/image (ours ÷ torch = ×${f(oursLlava(r) / t.llavaS, 2)}), full ${f(t.fullS ?? NaN)} s`,
      );
    }
    if (r.torch.oursLlavaAfterS)
      row('ours, LLaVA path after the torch runs', `${f(r.torch.oursLlavaAfterS)} s/image (drift check)`);
  }
  const workers = r.workers ?? [];
  for (const w of workers) {
    const speedup = workers[0].jobS / w.jobS;
    row(
      `encode job, ${w.images} images, ${w.workers} instance(s)`,
      `${f(w.jobS, 1)} s (${f(w.imagesPerMin, 2)} images/min, ×${f(speedup)}), peak RSS ${f(w.peakRssMB, 0)} MB${w.identicalTo ? ', output identical' : w.workers > 1 ? ', OUTPUT DIFFERS' : ''}`,
    );
  }
  console.log(lines.join('\n'));
}

/** Our LLaVA-path figure for the torch ratio: the median of the runs before and after torch's. */
function oursLlava(r: BenchReport): number {
  return r.torch?.oursLlavaAfterRunsS?.length
    ? median([...r.llava.runsS, ...r.torch.oursLlavaAfterRunsS])
    : r.llava.perImageS;
}

if (require.main === module)
  main().catch((e) => {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    process.exit(1);
  });
