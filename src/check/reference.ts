/**
 * Reference files: what `python/llava_vision_reference.py` writes from the user's own PyTorch modules,
 * in the golden fixtures' format. One safetensors file holding
 *
 * - `pixel_values` [N, 3, H, W] float32: the input, exactly as the PyTorch modules got it;
 * - `hidden_states.<k>` [N, T, D] for k = 0..L, `pooler_output` [N, D], `features` [N, P, D] (LLaVA's
 *   selected features), `projected` [N, P, H]: the float64 truth, rounded to float32;
 *
 * and in `__metadata__`: `format` (REFERENCE_FORMAT), `producer`, `expected` (JSON: per tensor the
 * fields of the fixtures' case.json, among them `torch_fp32_max_abs_err` — how far PyTorch's own
 * float32 run is from the float64 truth — and `f32_storage_max_abs_err`) and `run` (JSON: the
 * settings the writer used: select_layer, select_feature, image files, tiles per image, ...).
 *
 * Read with the strict safetensors reader (the file is as untrusted as any checkpoint) and JSON with
 * limits; a bad field is a CheckpointError naming the file, tensor and field.
 */
import { CheckpointError, quote, shapeText } from '../errors';
import { decodeToFloat32, isFloatDType } from '../io/dtype';
import { parseJsonWithLimits } from '../io/json';
import { SafetensorsFile, TensorInfo } from '../io/safetensors';

export const REFERENCE_FORMAT = 'llava-vision-reference/1';

/** Per tensor, as in the golden fixtures' case.json `expected` entries (all optional in a file). */
export interface ReferenceMeta {
  what?: string;
  /** An input or a value defined bit for bit (pixel values): compared for identity, not within a bound. */
  exact?: boolean;
  /** max |truth| and its RMS. */
  ref_max_abs?: number;
  ref_rms?: number;
  /** max |PyTorch float32 − float64 truth|: PyTorch's own error, the unit of the parity bound. */
  torch_fp32_max_abs_err?: number;
  torch_fp32_rms_err?: number;
  /** torch_fp32_max_abs_err / ref_max_abs. */
  torch_fp32_max_rel_err?: number;
  /** max |float32(truth) − truth|: the error of storing the truth as float32. */
  f32_storage_max_abs_err?: number;
}

const NUMBER_FIELDS = [
  'ref_max_abs',
  'ref_rms',
  'torch_fp32_max_abs_err',
  'torch_fp32_rms_err',
  'torch_fp32_max_rel_err',
  'f32_storage_max_abs_err',
] as const;

/** One tensor of a reference file with its metadata: what the matchers take as `reference`. */
export interface ReferenceTensor {
  name: string;
  shape: number[];
  /** As float32 (F16/BF16 exactly; F64 rounded to nearest), the dtype tf.tensor takes. */
  data: Float32Array;
  meta: ReferenceMeta;
  /** The file it was read from. */
  file: string;
}

/** `readReference`'s result: the tensors by name (`ref.features`, `ref['hidden_states.3']`). */
export type Reference = Record<string, ReferenceTensor>;

/** The settings the writer recorded (`__metadata__.run`); every field is optional. */
export interface ReferenceRun {
  select_layer?: number;
  select_feature?: string;
  /** Tiles of `pixel_values` per image, when the images had several (anyres). */
  tiles_per_image?: number[];
  /** Image files (or names) the pixel values were made from. */
  images?: string[];
  interpolate_pos_encoding?: boolean;
  [key: string]: unknown;
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A reference file, open: headers and metadata validated, tensors read on demand. */
export class ReferenceFile {
  private constructor(
    readonly path: string,
    private readonly file: SafetensorsFile,
    readonly format: string | null,
    readonly producer: string | null,
    readonly run: ReferenceRun,
    private readonly expected: Record<string, ReferenceMeta>,
  ) {}

  static open(path: string): ReferenceFile {
    const file = SafetensorsFile.open(path);
    try {
      const md = file.metadata;
      const expected = md.expected === undefined ? {} : parseExpected(path, md.expected);
      for (const name of Object.keys(expected)) {
        if (!file.has(name))
          throw new CheckpointError(
            `${path}: __metadata__.expected describes tensor ${quote(name)}, which the file does not hold`,
          );
      }
      const run = md.run === undefined ? {} : parseRun(path, md.run);
      return new ReferenceFile(path, file, md.format ?? null, md.producer ?? null, run, expected);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tensor names, sorted. */
  keys(): string[] {
    return this.file.keys();
  }

  has(name: string): boolean {
    return this.file.has(name);
  }

  info(name: string): TensorInfo {
    return this.file.info(name);
  }

  /** The tensor's metadata (an empty object when the file has none for it). */
  meta(name: string): ReferenceMeta {
    this.file.info(name); // names the file and tensor when it is missing
    return { ...(this.expected[name] ?? {}) };
  }

  read(name: string): ReferenceTensor {
    const info = this.checkFloat(name);
    return { name, shape: info.shape, data: this.file.readFloat32(name), meta: this.meta(name), file: this.path };
  }

  /** Rows `start .. start + count − 1` of the tensor's first dimension (a reference's tiles), as float32. */
  readRows(name: string, start: number, count: number): Float32Array {
    const info = this.checkFloat(name);
    const rows = info.shape[0];
    if (info.shape.length === 0 || start < 0 || count < 0 || start + count > rows) {
      throw new RangeError(
        `${this.path}: tensor ${quote(name)} ${shapeText(info.shape)}: rows ${start}..${start + count - 1} do not exist`,
      );
    }
    const perRow = info.shape.slice(1).reduce((a, b) => a * b, 1);
    const bytes = this.file.readRegion(name, { cols: perRow, r0: start, nr: count, c0: 0, nc: perRow });
    return decodeToFloat32(info.dtype, bytes, name);
  }

  close(): void {
    this.file.close();
  }

  private checkFloat(name: string): TensorInfo {
    const info = this.file.info(name);
    if (!isFloatDType(info.dtype))
      throw new CheckpointError(
        `${this.path}: tensor ${quote(name)}: dtype ${info.dtype} is not a float dtype (a reference holds F32 values)`,
      );
    return info;
  }
}

/** Every tensor of a reference file with its metadata, read into memory. */
export function readReference(path: string): Reference {
  const file = ReferenceFile.open(path);
  try {
    const out: Reference = {};
    for (const name of file.keys()) out[name] = file.read(name);
    return out;
  } finally {
    file.close();
  }
}

function parseExpected(file: string, text: string): Record<string, ReferenceMeta> {
  // {name: {field: value, shape: [..]}}: three levels.
  const json = parseJsonWithLimits(
    text,
    { maxDepth: 3, rejectDuplicateKeys: true },
    (p) => new CheckpointError(`${file}: __metadata__.expected ${p}`),
  );
  if (!isObject(json))
    throw new CheckpointError(`${file}: __metadata__.expected must be a JSON object of tensor name -> fields`);
  const out: Record<string, ReferenceMeta> = {};
  for (const [name, entry] of Object.entries(json)) {
    const where = `${file}: __metadata__.expected[${quote(name)}]`;
    if (!isObject(entry)) throw new CheckpointError(`${where} must be an object`);
    const meta: ReferenceMeta = {};
    for (const field of NUMBER_FIELDS) {
      const v = entry[field];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
        throw new CheckpointError(`${where}.${field} must be a finite number >= 0, got ${quote(v)}`);
      meta[field] = v;
    }
    if (entry.exact !== undefined) {
      if (typeof entry.exact !== 'boolean')
        throw new CheckpointError(`${where}.exact must be true or false, got ${quote(entry.exact)}`);
      meta.exact = entry.exact;
    }
    if (typeof entry.what === 'string') meta.what = entry.what;
    out[name] = meta;
  }
  return out;
}

function parseRun(file: string, text: string): ReferenceRun {
  const json = parseJsonWithLimits(
    text,
    { maxDepth: 3, rejectDuplicateKeys: true },
    (p) => new CheckpointError(`${file}: __metadata__.run ${p}`),
  );
  if (!isObject(json)) throw new CheckpointError(`${file}: __metadata__.run must be a JSON object`);
  const bad = (field: string, want: string) =>
    new CheckpointError(`${file}: __metadata__.run.${field} must be ${want}, got ${quote(json[field])}`);
  const { select_layer, select_feature, tiles_per_image, images, interpolate_pos_encoding } = json;
  if (select_layer !== undefined && select_layer !== null && !Number.isSafeInteger(select_layer))
    throw bad('select_layer', 'an integer');
  if (select_feature !== undefined && select_feature !== null && typeof select_feature !== 'string')
    throw bad('select_feature', 'a string');
  if (
    tiles_per_image !== undefined &&
    tiles_per_image !== null &&
    !(Array.isArray(tiles_per_image) && tiles_per_image.every((n) => Number.isSafeInteger(n) && (n as number) > 0))
  ) {
    throw bad('tiles_per_image', 'a list of positive integers');
  }
  if (images !== undefined && images !== null && !(Array.isArray(images) && images.every((s) => typeof s === 'string')))
    throw bad('images', 'a list of strings');
  if (
    interpolate_pos_encoding !== undefined &&
    interpolate_pos_encoding !== null &&
    typeof interpolate_pos_encoding !== 'boolean'
  )
    throw bad('interpolate_pos_encoding', 'true or false');
  const run: ReferenceRun = { ...json };
  for (const k of Object.keys(run)) if (run[k] === null) delete run[k];
  return run;
}
