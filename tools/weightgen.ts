/**
 * weightgen v1: the deterministic weight generator of the golden fixtures
 * (test/fixtures/GOLDEN_README.md, "Weight generator (weightgen v1)").
 * A tensor's values depend only on its name and shape, so full-size checkpoints need not be stored.
 * Pure TypeScript (no tfjs): plain typed arrays.
 */

export type Rule = 'embedding' | 'logit_scale' | 'target' | 'bias' | 'norm_weight' | 'linear_weight';

export interface TensorSpec {
  name: string;
  shape: number[];
}

export interface GeneratedTensor extends TensorSpec {
  data: Float32Array;
}

const EMBEDDING_SUFFIXES = [
  'class_embedding',
  'position_embedding.weight',
  'token_embedding.weight',
  'embed_tokens.weight',
  'image_newline',
];

// A module-level binding, not `Math.imul` in the loop: inside a vm context (jest) every global lookup
// goes through the context's interceptor and the loop gets ~40x slower.
const imul = Math.imul;

/** FNV-1a 32-bit over the UTF-8 bytes of `name`. */
export function fnv1a32(name: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(name)) {
    h = imul(h ^ b, 0x01000193) >>> 0;
  }
  return h;
}

/** (center, halfwidth) of a tensor; the first matching rule of the spec's table wins. */
export function ruleFor(name: string, shape: number[]): { rule: Rule; center: number; halfwidth: number } {
  if (EMBEDDING_SUFFIXES.some((s) => name.endsWith(s))) return { rule: 'embedding', center: 0, halfwidth: 0.05 };
  if (name.endsWith('logit_scale')) return { rule: 'logit_scale', center: 2.6592600369644, halfwidth: 0 };
  if (name.startsWith('target')) return { rule: 'target', center: 0, halfwidth: 1 };
  if (name.endsWith('bias')) return { rule: 'bias', center: 0, halfwidth: 0.02 };
  if (shape.length <= 1) return { rule: 'norm_weight', center: 1, halfwidth: 0.1 };
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return { rule: 'linear_weight', center: 0, halfwidth: Math.sqrt(3 / fanIn) };
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The hash step for element i: returns the 24-bit integer k with u = k / 2^24.
 * Math.imul keeps the products exact mod 2^32 (a float64 multiply would lose the low bits).
 */
function mix(i: number, seed: number): number {
  let x = (imul(i, 0x9e3779b9) + seed) >>> 0;
  x ^= x >>> 16;
  x = imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 8;
}

/** The uniform draws u in [0, 1) (exact doubles) for a tensor named `name` with n elements. */
export function uniform01(name: string, n: number): Float64Array {
  const seed = fnv1a32(name);
  const u = new Float64Array(n);
  for (let i = 0; i < n; i++) u[i] = mix(i, seed) / 16777216;
  return u;
}

/**
 * Generates the float32 values of a tensor. `out` (length = numel(shape)) may be passed to reuse a buffer.
 * No per-element allocation (V8 inlines `mix`): a ViT-L checkpoint is ~3e8 elements.
 */
export function generateTensor(name: string, shape: number[], out?: Float32Array): Float32Array {
  const n = numel(shape);
  if (out && out.length !== n)
    throw new RangeError(`generateTensor(${name}): out has ${out.length} elements, shape needs ${n}`);
  const data = out ?? new Float32Array(n);
  const { center, halfwidth } = ruleFor(name, shape);
  const seed = fnv1a32(name);
  // float64 arithmetic, one rounding to float32 by the store
  for (let i = 0; i < n; i++) data[i] = center + halfwidth * (2 * (mix(i, seed) / 16777216) - 1);
  return data;
}

/** Lazily generates each tensor of a checkpoint (one at a time, so callers can stream them to disk). */
export function* generateCheckpoint(entries: TensorSpec[]): Iterable<GeneratedTensor> {
  for (const { name, shape } of entries) yield { name, shape: [...shape], data: generateTensor(name, shape) };
}
