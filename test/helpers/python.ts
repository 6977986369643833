/**
 * A Python with PyTorch, NumPy and Pillow (Debian: apt-get install python3-torch python3-numpy
 * python3-pil) for the tests of python/llava_vision_reference.py; the library itself never needs one.
 * Without one those tests are skipped, saying why, unless LLAVA_VISION_REQUIRE_TORCH=1 (set by .ci/run
 * once it has installed the packages), where a missing torch fails them instead of skipping them.
 */
import { spawnSync } from 'child_process';

export const REQUIRE_TORCH_ENV = 'LLAVA_VISION_REQUIRE_TORCH';

export type TorchPython = { python: string; reason: null } | { python: null; reason: string };

let found: TorchPython | undefined;

export function torchPython(): TorchPython {
  if (found) return found;
  const candidates = [process.env.LLAVA_VISION_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch, numpy, PIL'], { encoding: 'utf8' });
    if (r.status === 0) return (found = { python, reason: null });
  }
  return (found = {
    python: null,
    reason: `no Python with torch, numpy and PIL (tried ${candidates.join(', ')}; apt-get install python3-torch python3-numpy python3-pil)`,
  });
}

/** `describe`, or `describe.skip` naming the reason; with LLAVA_VISION_REQUIRE_TORCH=1, a failing suite instead. */
export function describeWithTorch(name: string, body: (python: string) => void): void {
  const t = torchPython();
  if (t.python !== null) {
    describe(name, () => body(t.python));
  } else if (process.env[REQUIRE_TORCH_ENV] === '1') {
    describe(name, () =>
      test(`needs PyTorch (${REQUIRE_TORCH_ENV}=1)`, () => {
        throw new Error(t.reason);
      }),
    );
  } else {
    describe.skip(`${name} (skipped: ${t.reason})`, () => test('needs PyTorch', () => undefined));
    console.warn(`${name}: skipped: ${t.reason}`);
  }
}

/** Runs a Python script; throws with its stderr when it fails; returns stdout. */
export function runPython(python: string, args: string[], timeout = 300_000): string {
  const r = spawnSync(python, args, {
    encoding: 'utf8',
    timeout,
    maxBuffer: 64 << 20,
    env: { ...process.env, OMP_NUM_THREADS: '1' },
  });
  if (r.status !== 0) throw new Error(`${python} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stderr}`);
  return r.stdout;
}
