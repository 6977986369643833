/**
 * Reader for `torch.save` checkpoints (zip format, torch >= 1.6): LLaVA's `mm_projector.bin` and
 * HF `pytorch_model.bin`, without Python and without executing anything from the file.
 *
 * Layout: `<archive>/data.pkl` is a pickle of {name: tensor}; each tensor is
 * `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks)`
 * where `storage` is a persistent id `('storage', torch.FloatStorage, key, location, numel)` whose
 * bytes are the zip entry `<archive>/data/<key>` (little-endian). The pickle runs in the restricted
 * VM of `pickle.ts` with the allow-list below; tensors come back as descriptors validated against
 * their storage entries, and bytes are read from the zip only when a tensor is asked for.
 *
 * Same reading interface as `SafetensorsFile` (keys/has/info/read/readFloat32/close).
 */
import * as fs from 'fs';
import { CheckpointError, quote } from '../errors';
import { DType, DTYPE_SIZE, decodeToFloat32, isFloatDType, numel } from './dtype';
import { PyDict, PyGlobal, PyObject, PyTuple, PyValue, typeOf, unpickle } from './pickle';
import type { RawTensor } from './safetensors';
import { ZipReader } from './zip';

export interface TorchTensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Zip entry key under `<archive>/data/`. */
  storageKey: string;
  /** Storage offset and strides, in elements (as torch reports them). */
  offset: number;
  stride: number[];
}

/** torch's legacy typed-storage classes, as named in persistent ids. */
const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** The pickle's data.pkl holds only names and small tuples; anything near this is not a state dict. */
const MAX_PICKLE_BYTES = 64 * 2 ** 20;
/**
 * A view may repeat storage elements (stride 0: `expand`, broadcasting), so its element count can
 * exceed its storage's. Reading one materialises every element, so a 4-element storage viewed as
 * [1e9] would cost GBs from a tiny file: repetition is allowed only up to this many bytes.
 */
const MAX_REPEATED_VIEW_BYTES = 2 ** 20;
/**
 * Tensors may share a storage (tied weights: an LLM's embeddings and lm_head), but a file whose
 * tensors view the same bytes over and over (every layer of a 256-layer config on one storage) would
 * make a model far larger than the file: all tensors together may hold each storage byte this often.
 */
const MAX_SHARING = 4;

class Storage extends PyObject {
  readonly typeName = 'storage';
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
  ) {
    super();
  }
}

class Tensor extends PyObject {
  readonly typeName = 'tensor';
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {
    super();
  }
}

const isCount = (v: PyValue): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function counts(v: PyValue, what: string): number[] {
  if (!(v instanceof PyTuple)) throw new Error(`${what} must be a tuple of non-negative integers, got ${typeOf(v)}`);
  const bad = v.items.findIndex((x) => !isCount(x));
  if (bad >= 0) {
    const x = v.items[bad];
    throw new Error(
      `${what} must be a tuple of non-negative integers, but element ${bad} is ` +
        (typeof x === 'number' || typeof x === 'bigint' ? String(x) : `a ${typeOf(x)}`),
    );
  }
  return v.items as number[];
}

/** torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
function rebuildTensor(args: readonly PyValue[]): Tensor {
  if (args.length < 6 || args.length > 7) throw new Error(`expected 6 or 7 arguments, got ${args.length}`);
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof Storage)) throw new Error(`storage argument is ${typeOf(storage)}`);
  if (!isCount(offset)) throw new Error(`storage offset ${quote(offset)} is not a non-negative integer`);
  const shape = counts(size, 'size');
  const strides = counts(stride, 'stride');
  if (shape.length !== strides.length) throw new Error(`size has ${shape.length} dims but stride ${strides.length}`);
  // requires_grad, backward_hooks (an empty OrderedDict) and metadata carry no data: ignored.
  return new Tensor(storage, offset, shape, strides);
}

/** torch._utils._rebuild_parameter(data, requires_grad, hooks[, state]): a Parameter is its tensor. */
function rebuildParameter(args: readonly PyValue[]): Tensor {
  if (!(args[0] instanceof Tensor)) throw new Error(`data argument is ${typeOf(args[0])}`);
  return args[0];
}

/** collections.OrderedDict() — torch/pickle always call it with no arguments, then SETITEMS. */
function orderedDict(args: readonly PyValue[]): PyDict {
  if (args.length !== 0) throw new Error('only OrderedDict() with no arguments is supported');
  return new PyDict();
}

const GLOBALS = new Map<string, ((args: readonly PyValue[]) => PyValue) | null>([
  ['collections.OrderedDict', orderedDict],
  ['torch._utils._rebuild_tensor_v2', rebuildTensor],
  ['torch._utils._rebuild_parameter', rebuildParameter],
  ['torch._utils._rebuild_parameter_with_state', rebuildParameter],
  ...Object.keys(STORAGE_DTYPES).map((s) => [`torch.${s}`, null] as [string, null]),
  ['torch.float32', null],
  ['torch.float16', null],
  ['torch.bfloat16', null],
]);

const HINTS = new Map([['torch.storage._load_from_bytes', 'it would unpickle nested bytes with full Python pickle']]);

export class TorchBinFile {
  private constructor(
    readonly path: string,
    private readonly zip: ZipReader,
    private readonly prefix: string,
    private readonly tensors: Map<string, Tensor>,
  ) {}

  static open(path: string): TorchBinFile {
    sniff(path);
    const zip = ZipReader.open(path);
    try {
      return TorchBinFile.load(path, zip);
    } catch (e) {
      zip.close();
      throw e;
    }
  }

  private static load(path: string, zip: ZipReader): TorchBinFile {
    // torch writes "<archive>/data.pkl" with a single-segment archive name (the file stem or "archive").
    const pkls = zip.entries().filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (pkls.length !== 1) {
      throw new CheckpointError(
        `${path}: expected one "<archive>/data.pkl" entry in a torch.save zip, found ${pkls.length}`,
      );
    }
    const prefix = pkls[0].name.slice(0, -'data.pkl'.length);
    const order = zip.entry(prefix + 'byteorder');
    if (order && order.uncompressedSize > 16) throw new CheckpointError(`${path}: byteorder entry is too large`);
    if (order) {
      const text = Buffer.from(zip.read(order.name)).toString('latin1');
      if (text !== 'little')
        throw new CheckpointError(`${path}: byteorder is ${quote(text)}, only "little" is supported`);
    }
    if (pkls[0].uncompressedSize > MAX_PICKLE_BYTES) {
      throw new CheckpointError(
        `${path}: data.pkl is ${pkls[0].uncompressedSize} bytes, over the ${MAX_PICKLE_BYTES}-byte limit`,
      );
    }

    const storages = new Map<string, Storage>();
    const persistentLoad = (pid: PyValue): PyValue => {
      // ('storage', torch.<Type>Storage, key, location, numel)
      const t = pid instanceof PyTuple ? pid.items : [];
      const [tag, cls, key, , numel] = t;
      const dtype = cls instanceof PyGlobal && cls.module === 'torch' ? STORAGE_DTYPES[cls.name] : undefined;
      if (t.length !== 5 || tag !== 'storage' || !dtype || typeof key !== 'string' || !isCount(numel)) {
        throw new CheckpointError(`${path}: unsupported persistent id ${typeOf(pid)} (expected a storage tuple)`);
      }
      if (!/^[A-Za-z0-9_.-]+$/.test(key) || key.startsWith('.')) {
        throw new CheckpointError(`${path}: storage key ${quote(key)} is not a plain name`);
      }
      const seen = storages.get(key);
      if (seen && (seen.dtype !== dtype || seen.numel !== numel)) {
        throw new CheckpointError(`${path}: storage ${quote(key)} is referenced with conflicting types`);
      }
      const s = seen ?? new Storage(key, dtype, numel);
      storages.set(key, s);
      return s;
    };
    const root = unpickle(zip.read(pkls[0].name), {
      file: path,
      globals: GLOBALS,
      globalHints: HINTS,
      persistentLoad,
    });

    if (!(root instanceof PyDict)) {
      throw new CheckpointError(`${path}: top-level object is ${typeOf(root)}, expected a dict of tensors`);
    }
    const tensors = new Map<string, Tensor>();
    for (const [name, t] of root.map) {
      if (typeof name !== 'string')
        throw new CheckpointError(`${path}: state dict key ${typeOf(name)} is not a string`);
      if (!(t instanceof Tensor)) {
        throw new CheckpointError(`${path}: ${quote(name)} is ${typeOf(t)}, not a tensor`);
      }
      checkExtent(path, zip, prefix, name, t);
      tensors.set(name, t);
    }
    checkSharing(path, [...tensors.values()]);
    return new TorchBinFile(path, zip, prefix, tensors);
  }

  /** Tensor names, sorted (like SafetensorsFile). */
  keys(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TorchTensorInfo {
    const t = this.get(name);
    return {
      name,
      dtype: t.storage.dtype,
      shape: t.shape.slice(),
      storageKey: t.storage.key,
      offset: t.offset,
      stride: t.stride.slice(),
    };
  }

  /** Row-major little-endian bytes of the tensor (views and strided tensors are materialised). */
  readBytes(name: string): Uint8Array {
    const t = this.get(name);
    const es = DTYPE_SIZE[t.storage.dtype];
    const count = numel(t.shape);
    if (count === 0) return new Uint8Array(0);
    // The whole storage entry is read so its CRC can be checked; a state dict's storages are its tensors.
    const storage = this.zip.read(`${this.prefix}data/${t.storage.key}`);
    if (isContiguous(t.shape, t.stride)) {
      const begin = t.offset * es;
      const end = begin + count * es;
      // Whole storage: hand it over as is (it is ours); a view: copy so the rest can be freed.
      return begin === 0 && end === storage.length ? storage : new Uint8Array(storage.subarray(begin, end));
    }
    // Non-contiguous: walk the output in row-major order with a multi-index odometer.
    const out = new Uint8Array(count * es);
    const idx = new Array<number>(t.shape.length).fill(0);
    let src = t.offset;
    for (let i = 0; i < count; i++) {
      out.set(storage.subarray(src * es, src * es + es), i * es);
      for (let d = t.shape.length - 1; d >= 0; d--) {
        if (++idx[d] < t.shape[d]) {
          src += t.stride[d];
          break;
        }
        src -= (t.shape[d] - 1) * t.stride[d];
        idx[d] = 0;
      }
    }
    return out;
  }

  read(name: string): RawTensor {
    const t = this.get(name);
    return { dtype: t.storage.dtype, shape: t.shape.slice(), data: this.readBytes(name) };
  }

  readFloat32(name: string): Float32Array {
    const t = this.get(name);
    if (!isFloatDType(t.storage.dtype)) {
      throw new CheckpointError(
        `${this.path}: tensor ${quote(name)}: dtype ${t.storage.dtype} cannot be read as float32`,
      );
    }
    const bytes = this.readBytes(name);
    // The bytes are a fresh buffer of ours: view F32 in place rather than copying a large tensor again.
    if (t.storage.dtype === 'F32' && bytes.byteOffset % 4 === 0) {
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    }
    return decodeToFloat32(t.storage.dtype, bytes, name);
  }

  close(): void {
    this.zip.close();
  }

  private get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.path}: no tensor ${quote(name)} (file has ${this.tensors.size} tensors)`);
    return t;
  }
}

/** A clear message for the legacy (pre-1.6) format instead of "no end-of-central-directory". */
function sniff(path: string): void {
  let head: Buffer;
  try {
    const fd = fs.openSync(path, 'r');
    try {
      head = Buffer.alloc(4);
      head = head.subarray(0, fs.readSync(fd, head, 0, 4, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
  }
  if (head.length === 4 && head.readUInt32LE(0) === 0x04034b50) return;
  if (head[0] === 0x80) {
    throw new CheckpointError(
      `${path}: legacy (pre-1.6, non-zip) torch.save format is not supported; ` +
        're-save it with torch >= 1.6 (torch.save default) or convert it to safetensors',
    );
  }
  throw new CheckpointError(`${path}: not a torch.save zip archive`);
}

/** Every element the view can address must lie inside its storage, and the storage entry must match numel. */
function checkExtent(path: string, zip: ZipReader, prefix: string, name: string, t: Tensor): void {
  const s = t.storage;
  const entry = zip.entry(`${prefix}data/${s.key}`);
  const where = `${path}: tensor ${quote(name)}`;
  if (!entry) throw new CheckpointError(`${where}: storage ${quote(s.key)} has no zip entry`);
  const es = DTYPE_SIZE[s.dtype];
  if (entry.uncompressedSize !== s.numel * es) {
    throw new CheckpointError(
      `${where}: storage ${quote(s.key)} should hold ${s.numel} ${s.dtype} elements (${s.numel * es} bytes) ` +
        `but its entry has ${entry.uncompressedSize} bytes`,
    );
  }
  // torch.save writes storages uncompressed; a deflated one lets a small file inflate to GBs.
  if (entry.method !== 0) {
    throw new CheckpointError(
      `${where}: storage ${quote(s.key)} is compressed (zip method ${entry.method}); torch.save ` +
        'stores tensor data uncompressed, and a compressed storage can inflate a small file to GBs: re-save it with torch.save',
    );
  }
  if (t.shape.some((d) => d === 0)) return; // empty tensor: addresses nothing
  // BigInt: a hostile size x stride must not overflow into a "valid" index.
  let last = BigInt(t.offset);
  t.shape.forEach((d, i) => (last += BigInt(d - 1) * BigInt(t.stride[i])));
  if (last >= BigInt(s.numel)) {
    throw new CheckpointError(
      `${where}: offset ${t.offset}, shape ${quote(t.shape)}, stride ${quote(t.stride)} reach element ${last} ` +
        `but storage ${quote(s.key)} has ${s.numel} elements`,
    );
  }
  const count = numel(t.shape);
  if (count > s.numel && count * es > MAX_REPEATED_VIEW_BYTES) {
    throw new CheckpointError(
      `${where}: shape ${quote(t.shape)} has ${count} elements but its storage ${quote(s.key)} only ${s.numel} ` +
        `(stride ${quote(t.stride)} repeats them); a view may repeat storage elements up to ${MAX_REPEATED_VIEW_BYTES} bytes`,
    );
  }
  if (count * es > 2 ** 32) {
    throw new CheckpointError(`${where}: shape ${quote(t.shape)} is too large to read`);
  }
}

/** All tensors together may hold at most MAX_SHARING times the bytes of their storages (plus the view slack). */
function checkSharing(path: string, tensors: Tensor[]): void {
  const storages = new Map<string, number>();
  let tensorBytes = 0;
  for (const t of tensors) {
    const es = DTYPE_SIZE[t.storage.dtype];
    storages.set(t.storage.key, t.storage.numel * es);
    tensorBytes += numel(t.shape) * es;
  }
  const storageBytes = [...storages.values()].reduce((a, b) => a + b, 0);
  if (tensorBytes > MAX_SHARING * storageBytes + MAX_REPEATED_VIEW_BYTES) {
    throw new CheckpointError(
      `${path}: its ${tensors.length} tensors hold ${tensorBytes} bytes but its storages only ${storageBytes}: ` +
        `views repeat the same data (tensors may share storage bytes at most ${MAX_SHARING} times, as tied weights do)`,
    );
  }
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}
