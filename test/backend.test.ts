import * as tf from '../src/tf';
import { BACKEND_ENV_VAR, initBackend } from '../src/backend';
import { describeAdapter, isCpuAdapter } from '../src/gpu_adapters';

const saved = process.env[BACKEND_ENV_VAR];
afterEach(() => {
  if (saved === undefined) delete process.env[BACKEND_ENV_VAR];
  else process.env[BACKEND_ENV_VAR] = saved;
});

test('auto picks wasm here (no tfjs-node, no GPU: webgpu is installed but finds none) and says so once, with why not webgpu', async () => {
  delete process.env[BACKEND_ENV_VAR];
  const lines: string[] = [];
  expect(await initBackend({ log: (l) => lines.push(l) })).toBe('wasm');
  expect(tf.getBackend()).toBe('wasm');
  // auto looks at the platform's native API only (Vulkan here), never at the OpenGL ES route to llvmpipe.
  // It names the GEMM too (model/kernels/gemm.ts; LLAVA_VISION_GEMM may force one).
  expect(lines).toEqual([
    expect.stringMatching(
      /^llava-vision: tfjs backend "wasm" \(SIMD on, single-threaded build; GEMM (fma|mul-add|xnnpack) \([^)]+\); webgpu not used: (no WebGPU adapter|only a CPU adapter) \(tried vulkan: /,
    ),
  ]);
  expect(await initBackend({ log: (l) => lines.push(l) })).toBe('wasm');
  expect(lines).toHaveLength(1);
});

test('CPU adapters (software renderers) are told from GPUs by name or the fallback flag', () => {
  const adapter = (device: string, description = '', vendor = '', architecture = '') => ({
    vendor,
    architecture,
    device,
    description,
  });
  expect(isCpuAdapter(adapter('llvmpipe-llvm-15-0-6-256-bits-', 'OpenGL version OpenGL ES 3.2 Mesa 22.3.6'))).toBe(
    true,
  );
  expect(isCpuAdapter(adapter('llvmpipe (LLVM 15.0.6, 256 bits)', 'Mesa 22.3.6', 'mesa'))).toBe(true); // lavapipe on Vulkan
  expect(isCpuAdapter(adapter('SwiftShader Device (Subzero)', '', 'google'))).toBe(true);
  expect(isCpuAdapter(adapter('Microsoft Basic Render Driver', 'D3D12 WARP'))).toBe(true);
  expect(isCpuAdapter({ ...adapter('Some GPU'), isFallbackAdapter: true })).toBe(true);
  expect(isCpuAdapter(adapter('NVIDIA GeForce RTX 4090', 'NVIDIA: 550.54', 'nvidia', 'lovelace'))).toBe(false);
  expect(isCpuAdapter(adapter('Apple M2 Pro', '', 'apple', 'metal-3'))).toBe(false);
  expect(isCpuAdapter(adapter('AMD Radeon RX 7900 XTX (RADV NAVI31)', 'radv Mesa 24.0', 'amd', 'rdna-3'))).toBe(false);
  expect(describeAdapter({ api: 'opengles', ...adapter('llvmpipe-x', 'OpenGL ES 3.2 Mesa'), cpu: true })).toBe(
    'opengles: llvmpipe-x (OpenGL ES 3.2 Mesa), a CPU emulation',
  );
  expect(
    describeAdapter({
      api: 'vulkan',
      ...adapter('NVIDIA GeForce RTX 4090', 'NVIDIA: 550.54', 'nvidia', 'lovelace'),
      cpu: false,
    }),
  ).toBe('vulkan: NVIDIA GeForce RTX 4090 (nvidia, lovelace, NVIDIA: 550.54)');
});

test('the env var and the option override auto; the option wins', async () => {
  process.env[BACKEND_ENV_VAR] = 'cpu';
  expect(await initBackend({ log: null })).toBe('cpu');
  expect(await initBackend({ backend: 'wasm', log: null })).toBe('wasm');
});

test('a bad env var value is an error naming the variable', async () => {
  process.env[BACKEND_ENV_VAR] = 'webgl';
  await expect(initBackend({ log: null })).rejects.toThrow(
    /LLAVA_VISION_BACKEND="webgl" is not a backend \(choose from auto, wasm, cpu, tensorflow, webgpu\)/,
  );
});

test('asking for tensorflow without tfjs-node installed is a clear error', async () => {
  await expect(initBackend({ backend: 'tensorflow', log: null })).rejects.toThrow(
    /no usable tfjs backend for "tensorflow" \(tensorflow: neither @tensorflow\/tfjs-node nor @tensorflow\/tfjs-node-gpu is installed/,
  );
});

test("cpu: our one line says it is slow and what is faster; tfjs-backend-cpu's own banner is not printed", async () => {
  const lines: string[] = [];
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
  try {
    expect(await initBackend({ backend: 'cpu', log: (l) => lines.push(l) })).toBe('cpu');
    tf.tidy(() => tf.add(tf.tensor1d([1]), 1).dataSync()); // the first tensor is what triggers the banner
    expect(lines).toEqual([
      expect.stringMatching(/^llava-vision: tfjs backend "cpu" \(pure JS, slow: .*wasm.*tfjs-node/),
    ]);
    expect(warn).not.toHaveBeenCalled();
  } finally {
    warn.mockRestore();
    await initBackend({ backend: 'wasm', log: null });
  }
});
