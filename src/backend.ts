import * as fs from 'fs';
import * as tf from './tf';
import { ConfigError } from './errors';
import { describeAdapter, registerWebGpu, webGpuAdapter, webGpuInstalled } from './webgpu';
import { loadModule } from './load_module';
import { activeGemm, chooseGemm, describeGemm } from './model/kernels/gemm';

export type BackendChoice = 'auto' | 'wasm' | 'cpu' | 'tensorflow' | 'webgpu';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'wasm', 'cpu', 'tensorflow', 'webgpu'];
export const BACKEND_ENV_VAR = 'LLAVA_VISION_BACKEND';

export interface BackendOptions {
  /**
   * Overrides the env var; default `auto`: tensorflow if tfjs-node(-gpu) is installed, else webgpu if
   * the `webgpu` package is installed and finds a real GPU, else wasm, else cpu.
   */
  backend?: BackendChoice;
  /** Where to say which backend runs; default stderr, `null` for silence. */
  log?: ((line: string) => void) | null;
}

let announced: string | null = null;

/** Selects and initialises the tfjs backend once; returns its name. */
export async function initBackend(options: BackendOptions = {}): Promise<string> {
  const choice = options.backend ?? parseChoice(process.env[BACKEND_ENV_VAR]);
  const auto = choice === 'auto';
  const order: Exclude<BackendChoice, 'auto'>[] = auto ? ['tensorflow', 'webgpu', 'wasm', 'cpu'] : [choice];
  // Before tfjs-backend-wasm compiles its module: the GEMM choice may enable relaxed SIMD (and a bad
  // LLAVA_VISION_GEMM is an error of its own, not a reason to pass wasm over).
  if (order.includes('wasm')) chooseGemm();
  const failures: string[] = [];
  // Why an installed webgpu was passed over by auto (e.g. only a CPU adapter), for the log line.
  const notes: string[] = [];
  for (const name of order) {
    const error = await trySetBackend(name, auto);
    if (name === 'webgpu' && error !== null && auto && webGpuInstalled()) notes.push(`webgpu not used: ${error}`);
    if (error === null) {
      if (name === 'wasm') activeGemm(); // the GEMM kernel instantiated on the backend's memory now (a forced one that cannot run throws)
      return announce(name, logOf(options), notes);
    }
    failures.push(`${name}: ${error}`);
  }
  throw new ConfigError(`no usable tfjs backend for "${choice}" (${failures.join('; ')})`);
}

/**
 * For the low-level classes (CLIPVisionTower, CLIPVisionModel, Projector used without
 * LlavaVision.load): the backend `initBackend` would choose, unless one is chosen already, by
 * `initBackend` or by the app (`tf.setBackend` to anything but the cpu backend tfjs falls back to).
 */
export async function ensureBackend(options: BackendOptions = {}): Promise<string> {
  return chosenBackend() ?? initBackend(options);
}

/**
 * `ensureBackend` for synchronous code (a tower loaded by its constructor, a layer built directly).
 * The wasm backend only starts asynchronously, so without an earlier `await initBackend()` this
 * chooses tensorflow (tfjs-node, which starts synchronously) when installed, else cpu, and then
 * says in one line how to get wasm.
 */
export function ensureBackendSync(options: BackendOptions = {}): string {
  const chosen = chosenBackend();
  if (chosen) return chosen;
  const choice = options.backend ?? parseChoice(process.env[BACKEND_ENV_VAR]);
  const log = logOf(options);
  if (choice === 'auto' || choice === 'tensorflow') {
    if (!tf.findBackendFactory('tensorflow')) {
      try {
        requireFirst(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
      } catch {
        // not installed: cpu below
      }
    }
    if (tf.findBackendFactory('tensorflow') && setBackendNow('tensorflow')) return announce('tensorflow', log);
    if (choice === 'tensorflow')
      throw new ConfigError(
        `no usable tfjs backend for "tensorflow" (tfjs-node could not start synchronously; await initBackend() first)`,
      );
  }
  if (!setBackendNow('cpu'))
    throw new ConfigError(
      `no usable tfjs backend: the cpu backend is not installed (npm install @tensorflow/tfjs-backend-cpu@${tf.version_core})`,
    );
  (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
  if (choice === 'cpu') return announce('cpu', log);
  if (log && announced !== 'cpu') {
    log(
      'llava-vision: tfjs backend "cpu" (pure JS, slow): the faster wasm backend starts asynchronously, so await initBackend() ' +
        'before loading synchronously, or load with `await CLIPVisionTower.load(dir)` / delayLoad + `await loadModelAsync()`',
    );
  }
  announced = 'cpu';
  return 'cpu';
}

/** The backend in use if someone chose it: initBackend, or the app (tfjs's own cpu fallback does not count). */
function chosenBackend(): string | null {
  // engine().backendName, unlike tf.getBackend(), does not initialise a default backend.
  const current = tf.engine().backendName;
  if (current === null) return null;
  return current === announced || current !== 'cpu' ? current : null;
}

/** tfjs-core's setBackend completes synchronously for backends whose factory is synchronous (cpu, tensorflow). */
function setBackendNow(name: string): boolean {
  if (tf.engine().backendName === name) return true;
  tf.setBackend(name).catch(() => undefined);
  return tf.engine().backendName === name;
}

/** Where to say which backend runs: the option's, else stderr; null is silence. */
export function logOf(options: BackendOptions): ((line: string) => void) | null {
  return options.log === undefined ? (line: string) => process.stderr.write(line + '\n') : options.log;
}

/** Says once which backend runs (and, under auto, why an installed webgpu was passed over). */
function announce(name: string, log: ((line: string) => void) | null, notes: string[] = []): string {
  if (log && announced !== name) log(`llava-vision: tfjs backend "${name}"${describe(name, notes)}`);
  announced = name;
  return name;
}

function parseChoice(value: string | undefined): BackendChoice {
  if (value === undefined || value === '') return 'auto';
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  throw new ConfigError(`${BACKEND_ENV_VAR}="${value}" is not a backend (choose from ${BACKEND_CHOICES.join(', ')})`);
}

/** Null once `name` is the active backend, else why it cannot be; under `auto`, webgpu only on a real GPU. */
async function trySetBackend(name: Exclude<BackendChoice, 'auto'>, auto: boolean): Promise<string | null> {
  // engine().backendName, unlike tf.getBackend(), does not initialise a default backend (and print its banner).
  if (tf.engine().backendName === name) return null;
  try {
    if (name === 'tensorflow') {
      if (!tf.findBackendFactory('tensorflow')) {
        try {
          requireFirst(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
        } catch (e) {
          if ((e as { code?: string }).code !== 'MODULE_NOT_FOUND') throw e;
          return `neither @tensorflow/tfjs-node nor @tensorflow/tfjs-node-gpu is installed (npm install @tensorflow/tfjs-node@${tf.version_core})`;
        }
      }
      // A tfjs-node whose tfjs-core is another copy registers on that copy, not ours.
      if (!tf.findBackendFactory('tensorflow'))
        return `installed tfjs-node uses another @tensorflow/tfjs-core copy (versions must match ${tf.version_core})`;
    } else if (name === 'wasm') {
      loadModule('@tensorflow/tfjs-backend-wasm');
    } else if (name === 'webgpu') {
      const adapter = await registerWebGpu({ gpuOnly: auto });
      if (typeof adapter === 'string') return adapter;
    }
    if (!(await tf.setBackend(name))) return 'initialisation failed';
    // tfjs-backend-cpu prints a 5-line "install tfjs-node" banner on its first tensor; our one line
    // (describe) already says which backend runs and how to get a faster one.
    if (name === 'cpu') (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

function requireFirst(modules: string[]): void {
  let last: unknown;
  for (const m of modules) {
    try {
      loadModule(m);
      return;
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

/** The log line's details: what runs, and (auto) why an installed webgpu was not used. */
function describe(name: string, notes: string[]): string {
  const details = [...backendDetails(name), ...notes];
  return details.length ? ` (${details.join('; ')})` : '';
}

function backendDetails(name: string): string[] {
  if (name === 'cpu')
    return [`pure JS, slow: the default wasm backend or @tensorflow/tfjs-node@${tf.version_core} are much faster`];
  if (name === 'webgpu') {
    const adapter = webGpuAdapter()!;
    return [`${describeAdapter(adapter)}${adapter.cpu ? ': slow, for testing only' : ''}`];
  }
  if (name !== 'wasm') return [];
  try {
    const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
    const threads = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
    const gemm = activeGemm();
    return [
      `SIMD ${simd ? 'on' : 'off'}, ${threads ? 'multi-threaded' : 'single-threaded'} build`,
      ...(gemm ? [`GEMM ${describeGemm(gemm)}`] : []),
    ];
  } catch {
    return []; // flags not evaluated yet
  }
}

const PREFAULT_CHUNK = 16 << 20;

/**
 * Brings fresh memory in (e.g. the wasm heap pages behind freshly allocated weights) by reading
 * /dev/zero into it on libuv's thread pool, several chunks at once. A first write to fresh memory from
 * JS faults it in page by page on one thread, a large part of a ViT-L load; the kernel does the same
 * faster on several threads. Only for memory about to be overwritten (it is zeroed). A hint: does
 * nothing where /dev/zero cannot be read. (A wasm memory grows in place, since V8 reserves its whole
 * range, so a heap growth during the reads is harmless.)
 */
export async function prefaultMemory(views: ArrayBufferView[]): Promise<void> {
  let fd: number;
  try {
    fd = fs.openSync('/dev/zero', 'r');
  } catch {
    return;
  }
  const reads: Promise<void>[] = [];
  for (const v of views) {
    const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    for (let at = 0; at < bytes.length; at += PREFAULT_CHUNK) {
      const length = Math.min(PREFAULT_CHUNK, bytes.length - at);
      reads.push(new Promise((resolve) => fs.read(fd, bytes, at, length, null, () => resolve())));
    }
  }
  try {
    await Promise.all(reads);
  } finally {
    fs.closeSync(fd);
  }
}
