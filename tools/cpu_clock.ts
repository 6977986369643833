/**
 * The core's clock as the benchmarks see it, for the GEMM rates' fraction of the 128-bit FMA peak
 * (/proc/cpuinfo gives the base clock; a loaded core runs at its turbo clock). Measured as a chain of
 * dependent 32-bit integer adds in wasm (one add per cycle on every x86 and ARM core: one cycle of
 * latency), timed over ~0.1 s, best of 9 (other tenants only slow it down).
 */
import wabt from 'wabt';

/** Dependent adds per loop iteration (the loop's own counter runs alongside). */
const CHAIN = 32;

export async function measureClockGHz(): Promise<number> {
  const tools = await wabt();
  const body = Array.from({ length: CHAIN }, () => '(local.set $x (i32.add (local.get $x) (local.get $y)))').join('\n');
  const module = tools.parseWat(
    'clock.wat',
    `(module (func (export "run") (param $n i32) (param $y i32) (result i32) (local $x i32)
    (loop $l ${body} (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n))) (local.get $x)))`,
    {},
  );
  const bytes = Uint8Array.from(module.toBinary({}).buffer);
  module.destroy();
  // (The project's TS lib has no WebAssembly types; Node has the global.)
  type Api = {
    Module: new (b: Uint8Array) => object;
    Instance: new (m: object) => { exports: { run: (n: number, y: number) => number } };
  };
  const api = (globalThis as unknown as { WebAssembly: Api }).WebAssembly;
  const run = new api.Instance(new api.Module(bytes)).exports.run;
  run(1e6, 3); // compiled by TurboFan
  const n = 3e6;
  let best = Infinity;
  for (let r = 0; r < 9; r++) {
    const t = process.hrtime.bigint();
    run(n, 3);
    best = Math.min(best, Number(process.hrtime.bigint() - t));
  }
  return (n * CHAIN) / best;
}

/**
 * The core's 128-bit FMA peak in GFLOP/s: 2 FMA ports × 4 float32 lanes × 2 FLOPs × the clock (both
 * x86 vendors' current cores and Arm's big cores have two 128-bit-capable FMA pipes).
 */
export const fmaPeakGflops = (clockGHz: number): number => 2 * 4 * 2 * clockGHz;
