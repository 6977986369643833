/**
 * Writes generated (weightgen v1) checkpoints as HF-style folders: config.json + model.safetensors.
 *
 *   node dist/tools/make_checkpoint.js [--case DIR] [--out DIR] [--dtype F32|F16|BF16] [--force]
 *
 * writes the full-size case (default: test/fixtures/cases/vitl14_336_generated_sel-2_patch/model, whose
 * weights_manifest.json lists the names/shapes) into `--out` (default weights/generated/vitl14_336) in the
 * fixtures' llava_original layout:
 *   clip_tower/  config.json (the case's, verbatim), preprocessor_config.json, model.safetensors (vision_model.*)
 *   llava/       config.json (LLaVA: mm_projector_type, mm_hidden_size, ...), model.safetensors (model.mm_projector.*)
 *
 * A full ViT-L/14-336 is 1.2 GB in F32, so tensors are generated and written one at a time
 * (src/io/safetensors.ts's writeSafetensorsStreaming) instead of held in memory all at once.
 * An existing file whose __metadata__ matches (generator, dtype, fingerprint of the names/shapes) is kept.
 */
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { writeFileAtomic } from '../src/io/atomic';
import { f32ToBf16Bits, f32ToF16Bits } from '../src/io/dtype';
import { SafetensorsFile, writeSafetensorsStreaming } from '../src/io/safetensors';
import { ConfigError } from '../src/errors';
import { generateTensor, numel, TensorSpec } from './weightgen';
import { visionTowerSpecs } from '../src/model/param_specs';
import { clipVisionConfigFromJson } from '../src/config/clip';

export type GenDType = 'F32' | 'F16' | 'BF16';

export const GENERATOR = 'weightgen v1';

export interface GenerateOptions {
  /** weights_manifest.json listing {name, shape}; default: the CLIP vision tower derived from `config`. */
  manifest?: string;
  /** Written verbatim as config.json: a clip_vision_model config, or a clip config with `vision_config`. */
  config: object;
  dtype: GenDType;
  /** Keep only the tensors whose name passes. */
  keys?: (name: string) => boolean;
  /** Regenerate even if a matching file exists. */
  force?: boolean;
}

export interface WriteResult {
  file: string;
  tensors: number;
  bytes: number;
  /** true when an existing file with matching __metadata__ was kept. */
  cached: boolean;
}

/** Names and shapes of HF CLIPVisionModel's `vision_model.*` weights for a config.json object (CLIP, vision-only or llava-hf). */
export function clipVisionTensorSpecs(config: object): TensorSpec[] {
  return visionTowerSpecs(clipVisionConfigFromJson(config));
}

export function readManifest(file: string): TensorSpec[] {
  const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { tensors?: TensorSpec[] };
  if (!Array.isArray(m.tensors)) throw new ConfigError(`${file}: no "tensors" list`);
  return m.tensors.map(({ name, shape }) => ({ name, shape }));
}

/** __metadata__ of a generated file; the fingerprint makes the cache notice a changed name/shape list. */
function generatedMetadata(specs: TensorSpec[], dtype: GenDType): Record<string, string> {
  const sorted = [...specs].sort((a, b) => cmp(a.name, b.name)).map((s) => [s.name, s.shape]);
  const fingerprint = createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 16);
  return { format: 'pt', generator: GENERATOR, dtype, tensors: fingerprint };
}

/** Code-unit order, as JS sort and Python's sorted() on these ASCII names. */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** __metadata__ of an existing, valid safetensors file (the strict reader also catches truncation). */
function existingMetadata(file: string): Record<string, string> | undefined {
  if (!fs.existsSync(file)) return undefined;
  try {
    const f = SafetensorsFile.open(file);
    f.close();
    return f.metadata;
  } catch {
    return undefined; // corrupt or foreign: regenerate
  }
}

const sameRecord = (a: Record<string, string> | undefined, b: Record<string, string>) =>
  a !== undefined && Object.keys(a).length === Object.keys(b).length && Object.keys(b).every((k) => a[k] === b[k]);

/**
 * Streams generated tensors into one safetensors file (`writeSafetensorsStreaming`: one tensor in
 * memory at a time). F16/BF16 hold the round-to-nearest-even of the float32 value (the spec).
 */
export function writeGeneratedSafetensors(
  file: string,
  specs: TensorSpec[],
  dtype: GenDType,
  force = false,
): WriteResult {
  const metadata = generatedMetadata(specs, dtype);
  const result = {
    file,
    tensors: specs.length,
    bytes: specs.reduce((sum, s) => sum + numel(s.shape) * (dtype === 'F32' ? 4 : 2), 0),
  };
  if (!force && sameRecord(existingMetadata(file), metadata)) return { ...result, cached: true };

  fs.mkdirSync(path.dirname(file), { recursive: true });
  const maxN = Math.max(0, ...specs.map((s) => numel(s.shape)));
  const f32 = new Float32Array(maxN); // reused for every tensor
  const half = dtype === 'F32' ? undefined : new Uint16Array(maxN);
  const toBits = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  const bytes = (name: string, shape: number[]) => () => {
    const n = numel(shape);
    const data = generateTensor(name, shape, f32.subarray(0, n));
    if (!half) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let i = 0; i < n; i++) half[i] = toBits(data[i]);
    return new Uint8Array(half.buffer, 0, 2 * n);
  };
  writeSafetensorsStreaming(
    file,
    specs.map(({ name, shape }) => ({ name, dtype, shape, bytes: bytes(name, shape) })),
    metadata,
  );
  return { ...result, cached: false };
}

/** A generated checkpoint folder: config.json (verbatim) + model.safetensors. */
export function writeGeneratedCheckpoint(outDir: string, opts: GenerateOptions): WriteResult {
  let specs = opts.manifest ? readManifest(opts.manifest) : clipVisionTensorSpecs(opts.config);
  if (opts.keys) specs = specs.filter((s) => opts.keys!(s.name));
  fs.mkdirSync(outDir, { recursive: true });
  writeFileAtomic(path.join(outDir, 'config.json'), Buffer.from(JSON.stringify(opts.config, null, 1) + '\n'));
  return writeGeneratedSafetensors(path.join(outDir, 'model.safetensors'), specs, opts.dtype, opts.force);
}

export interface FullSizeCaseResult {
  towerDir: string;
  llavaDir: string;
  tower: WriteResult;
  projector: WriteResult;
}

/**
 * The full-size case's checkpoints from its `model/` folder (config.json, preprocessor_config.json,
 * weights_manifest.json; case.json one level up gives select layer/feature). See the file comment for the layout.
 */
export function writeFullSizeCase(
  caseModelDir: string,
  outDir: string,
  dtype: GenDType = 'F32',
  force = false,
): FullSizeCaseResult {
  const manifest = path.join(caseModelDir, 'weights_manifest.json');
  const specs = readManifest(manifest);
  const config = JSON.parse(fs.readFileSync(path.join(caseModelDir, 'config.json'), 'utf8')) as object;
  const towerDir = path.join(outDir, 'clip_tower');
  const llavaDir = path.join(outDir, 'llava');

  const tower = writeGeneratedCheckpoint(towerDir, {
    manifest,
    config,
    dtype,
    force,
    keys: (n) => n.startsWith('vision_model.'),
  });
  // The case's own files byte for byte (JSON.stringify would turn 1e-05 into 0.00001, 1.0 into 1).
  for (const f of ['config.json', 'preprocessor_config.json']) {
    const src = path.join(caseModelDir, f);
    if (fs.existsSync(src)) writeFileAtomic(path.join(towerDir, f), fs.readFileSync(src));
  }

  const proj = specs.filter((s) => s.name.startsWith('model.mm_projector.'));
  const projector = writeGeneratedCheckpoint(llavaDir, {
    manifest,
    config: llavaConfig(proj, caseModelDir, dtype),
    dtype,
    force,
    keys: (n) => n.startsWith('model.mm_projector.'),
  });
  return { towerDir, llavaDir, tower, projector };
}

/** A LLaVA (llava_original) config.json for the projector tensors, like the fixtures' llava/config.json. */
function llavaConfig(proj: TensorSpec[], caseModelDir: string, dtype: GenDType): object {
  const weights = proj.filter((s) => s.name.endsWith('.weight')).sort((a, b) => projIndex(a.name) - projIndex(b.name));
  if (weights.length === 0) throw new ConfigError(`${caseModelDir}: no model.mm_projector.* weights in the manifest`);
  const caseFile = path.join(caseModelDir, '..', 'case.json');
  const run = fs.existsSync(caseFile)
    ? ((JSON.parse(fs.readFileSync(caseFile, 'utf8')) as { run?: Record<string, unknown> }).run ?? {})
    : {};
  return {
    architectures: ['LlavaLlamaForCausalLM'],
    model_type: 'llava',
    hidden_size: weights[weights.length - 1].shape[0],
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype],
    // LLaVA-1.5's tower; the weights are in ../clip_tower (same shapes, generated values).
    mm_vision_tower: 'openai/clip-vit-large-patch14-336',
    mm_hidden_size: weights[0].shape[1],
    mm_projector_type:
      (run.projector as string | undefined) ?? (weights.length === 1 ? 'linear' : `mlp${weights.length}x_gelu`),
    mm_vision_select_layer: (run.select_layer as number | undefined) ?? -2,
    mm_vision_select_feature: (run.select_feature as string | undefined) ?? 'patch',
    mm_patch_merge_type: 'flat',
    mm_use_im_start_end: false,
    mm_use_im_patch_token: false,
    use_mm_proj: true,
  };
}

/** `model.mm_projector.2.weight` -> 2 (`model.mm_projector.weight`, the linear projector -> 0). */
function projIndex(name: string): number {
  const m = /^model\.mm_projector\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : 0;
}

function main(argv: string[]): void {
  const args: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--force' || a === '--help' || a === '-h') args[a.replace(/^-+/, '')] = true;
    else if (a === '--case' || a === '--out' || a === '--dtype') {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      args[a.slice(2)] = argv[++i];
    } else throw new Error(`unknown argument ${a}`);
  }
  if (args.help || args.h) {
    console.log('usage: make_checkpoint [--case MODEL_DIR] [--out DIR] [--dtype F32|F16|BF16] [--force]');
    return;
  }
  const dtype = (args.dtype ?? 'F32') as string;
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16')
    throw new Error(`--dtype must be F32, F16 or BF16, got ${dtype}`);
  const caseDir = (args.case as string | undefined) ?? 'test/fixtures/cases/vitl14_336_generated_sel-2_patch/model';
  const out = (args.out as string | undefined) ?? 'weights/generated/vitl14_336';
  const t0 = Date.now();
  const r = writeFullSizeCase(caseDir, out, dtype, args.force === true);
  for (const w of [r.tower, r.projector]) {
    console.log(`${w.file}: ${w.tensors} tensors, ${(w.bytes / 2 ** 20).toFixed(1)} MiB ${w.cached ? '(cached)' : ''}`);
  }
  console.log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

if (require.main === module) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    console.error(`make_checkpoint: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
