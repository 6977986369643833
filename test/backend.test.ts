import * as tf from '../src/tf';
import { BACKEND_ENV_VAR, initBackend } from '../src/backend';

const saved = process.env[BACKEND_ENV_VAR];
afterEach(() => {
  if (saved === undefined) delete process.env[BACKEND_ENV_VAR];
  else process.env[BACKEND_ENV_VAR] = saved;
});

test('auto picks wasm here (tfjs-node is not installed) and says so once', async () => {
  delete process.env[BACKEND_ENV_VAR];
  const lines: string[] = [];
  expect(await initBackend({ log: (l) => lines.push(l) })).toBe('wasm');
  expect(tf.getBackend()).toBe('wasm');
  expect(lines).toEqual([expect.stringMatching(/^llava-vision: tfjs backend "wasm"/)]);
});

test('the env var and the option override auto; the option wins', async () => {
  process.env[BACKEND_ENV_VAR] = 'cpu';
  expect(await initBackend({ log: null })).toBe('cpu');
  expect(await initBackend({ backend: 'wasm', log: null })).toBe('wasm');
});

test('a bad env var value is an error naming the variable', async () => {
  process.env[BACKEND_ENV_VAR] = 'webgpu';
  await expect(initBackend({ log: null })).rejects.toThrow(/LLAVA_VISION_BACKEND="webgpu" is not a backend/);
});

test('asking for tensorflow without tfjs-node installed is a clear error', async () => {
  await expect(initBackend({ backend: 'tensorflow', log: null })).rejects.toThrow(/no usable tfjs backend for "tensorflow" \(tensorflow: neither @tensorflow\/tfjs-node nor @tensorflow\/tfjs-node-gpu is installed/);
});

test('cpu: our one line says it is slow and what is faster; tfjs-backend-cpu\'s own banner is not printed', async () => {
  const lines: string[] = [];
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
  try {
    expect(await initBackend({ backend: 'cpu', log: (l) => lines.push(l) })).toBe('cpu');
    tf.tidy(() => tf.add(tf.tensor1d([1]), 1).dataSync()); // the first tensor is what triggers the banner
    expect(lines).toEqual([expect.stringMatching(/^llava-vision: tfjs backend "cpu" \(pure JS, slow: .*wasm.*tfjs-node/)]);
    expect(warn).not.toHaveBeenCalled();
  } finally {
    warn.mockRestore();
    await initBackend({ backend: 'wasm', log: null });
  }
});
