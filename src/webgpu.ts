/**
 * The `webgpu` backend in Node: TensorFlow.js's WebGPU backend (`@tensorflow/tfjs-backend-webgpu`) on
 * a Dawn adapter (gpu_adapters.ts). Both packages are optional peer dependencies, like tfjs-node.
 */
import * as tf from './tf';
import { BackendError } from './errors';
import {
  FoundAdapter,
  GpuAdapterInfo,
  GpuAdapterSummary,
  GpuDevice,
  Gpu,
  describeAdapter,
  findAdapter,
} from './gpu_adapters';
import { loadModule } from './load_module';

export { describeAdapter, webGpuInstalled } from './gpu_adapters';

/** The adapter and device in use; held for the life of the process (Dawn tears down a collected GPU object under a live device). */
let active: { gpu: Gpu; adapter: GpuAdapterSummary; device: GpuDevice } | null = null;
let firstGpuError: string | null = null;
const searches = new Map<boolean, Promise<FoundAdapter | string>>();

/** The adapter the `webgpu` backend runs on, once registered. */
export function webGpuAdapter(): GpuAdapterSummary | null {
  return active?.adapter ?? null;
}

/**
 * Registers the tfjs backend `webgpu` on the best adapter Dawn offers (a real GPU first; with
 * `gpuOnly`, nothing else). Returns the adapter, or why there is none (one line naming what to
 * install, or the adapters tried).
 */
export async function registerWebGpu(options: { gpuOnly: boolean }): Promise<GpuAdapterSummary | string> {
  if (active)
    return options.gpuOnly && active.adapter.cpu
      ? `only a CPU adapter (${describeAdapter(active.adapter)})`
      : active.adapter;
  // Searched once per process and mode: each search starts Dawn instances (and a GL context), which is slow.
  let search = searches.get(options.gpuOnly);
  if (!search) searches.set(options.gpuOnly, (search = findAdapter(options)));
  const chosen = await search;
  if (typeof chosen === 'string') return chosen;
  let WebGPUBackend: new (device: GpuDevice, info: GpuAdapterInfo) => tf.KernelBackend;
  try {
    ({ WebGPUBackend } = loadModule('@tensorflow/tfjs-backend-webgpu') as { WebGPUBackend: typeof WebGPUBackend });
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }

  // Everything the adapter allows: the defaults (128 MiB per storage binding, 256 MiB per buffer) are
  // too small for batches of ViT-L activations on some GPUs.
  const requiredLimits: Record<string, number> = {};
  for (const key in chosen.adapter.limits) {
    const value = chosen.adapter.limits[key];
    if (typeof value === 'number') requiredLimits[key] = value;
  }
  let device: GpuDevice;
  try {
    device = await chosen.adapter.requestDevice({ requiredLimits });
  } catch (e) {
    return `${describeAdapter(chosen.summary)}: requestDevice failed (${String((e as Error).message ?? e).split('\n')[0]})`;
  }
  // A validation or out-of-memory error is not thrown by the op that caused it: WebGPU reports it
  // here, and the op's output is left as zeros. Kept, so the next result read can be refused.
  device.onuncapturederror = (event) => {
    firstGpuError ??= event.error.message.split('\n')[0];
  };
  void device.lost.then((info) => {
    if (info.reason !== 'destroyed') firstGpuError ??= `WebGPU device lost: ${info.message.split('\n')[0]}`;
  });
  active = { gpu: chosen.gpu, adapter: chosen.summary, device };
  const info = chosen.adapter.info;
  // tfjs-backend-webgpu's GPU*Usage constants are browser globals; its constructor insists on
  // navigator.gpu, which is set only for that moment (set for longer, tfjs's own registration
  // would pick it up as a default backend).
  Object.assign(globalThis, chosen.globals);
  tf.registerBackend(
    'webgpu',
    () => {
      const g = globalThis as { navigator?: unknown };
      const saved = Object.getOwnPropertyDescriptor(g, 'navigator');
      Object.defineProperty(g, 'navigator', {
        value: { ...(g.navigator as object), gpu: active!.gpu },
        configurable: true,
        writable: true,
      });
      try {
        return refuseSyncReads(new WebGPUBackend(device, info));
      } finally {
        if (saved) Object.defineProperty(g, 'navigator', saved);
        else delete g.navigator;
      }
    },
    0,
  );
  return chosen.summary;
}

interface WebGpuBackendInternals {
  readSync(dataId: object): unknown;
  tensorMap: { get(dataId: object): { values: unknown; dtype: string } };
}

/**
 * tfjs-backend-webgpu reads a tensor synchronously (dataSync, arraySync) through an OffscreenCanvas,
 * which Node lacks: a ReferenceError deep in tfjs. Such reads get a clear error instead (values
 * already on the CPU are still returned).
 */
function refuseSyncReads(backend: tf.KernelBackend): tf.KernelBackend {
  const internals = backend as unknown as WebGpuBackendInternals;
  const readSync = internals.readSync.bind(backend);
  internals.readSync = (dataId) => {
    const data = internals.tensorMap.get(dataId);
    if (data.values != null || data.dtype === 'string') return readSync(dataId);
    throw new BackendError(
      'the webgpu backend cannot read tensors synchronously in Node (dataSync, arraySync, exporting or training weights): use await tensor.data(), or the wasm or cpu backend',
    );
  };
  return backend;
}

/**
 * Throws the first WebGPU error reported since the last check (then forgets it). WebGPU reports a
 * failed op (e.g. a buffer over the adapter's limits) asynchronously and leaves zeros behind, so
 * results read after one must not be trusted.
 */
export function throwOnWebGpuError(): void {
  if (firstGpuError === null) return;
  const message = firstGpuError;
  firstGpuError = null;
  throw new BackendError(
    `webgpu: ${message} (the results are not valid; a smaller batch size may fit the adapter's limits)`,
  );
}
