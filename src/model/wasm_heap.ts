/**
 * The loader's bookkeeping of the wasm heap behind tensors: weights allocated without being written
 * (a checkpoint load fills them in place, model/weights.ts), and views for reading a tensor's memory
 * without a copy (the sharded forward's shared-memory steps). Off wasm every function here declines
 * (returns null) and callers take tfjs's own paths.
 */
import * as tf from '../tf';

/** What the wasm backend exposes of its heap (public members of MathBackendWasm). */
interface WasmHeapBackend {
  write(values: null, shape: number[], dtype: tf.DataType): object;
  typedArrayFromHeap(t: {
    shape: number[];
    dtype: tf.DataType;
    dataId: object;
  }): Float32Array | Int32Array | Uint8Array;
}

/** Data of tensors from `allocateUninitialized` that nothing has written or read yet. */
const unwritten = new WeakSet<object>();

/** On wasm, a tensor whose memory is allocated but not written (its contents are whatever the heap held); null elsewhere. */
export function allocateUninitialized(shape: number[], dtype: tf.DataType): tf.Tensor | null {
  if (tf.getBackend() !== 'wasm') return null;
  const backend = tf.backend() as unknown as WasmHeapBackend;
  const dataId = backend.write(null, shape, dtype);
  unwritten.add(dataId);
  return tf.engine().makeTensorFromDataId(dataId, shape, dtype, tf.backend());
}

/**
 * The wasm heap memory of a float32 tensor from `allocateUninitialized` that has not been written yet,
 * for filling in place; null for any other tensor. Only such memory may be written behind tfjs's back:
 * kernels keep state keyed by tensor (XNNPACK's GEMM caches a packed copy of each right-hand operand),
 * so rewriting memory a kernel has seen would leave it computing with the old values. Valid until the
 * next tfjs allocation (a heap growth replaces the heap's views); call `markWritten` once filled.
 */
export function unwrittenHeapView(t: tf.Tensor): Float32Array | null {
  return unwritten.has(t.dataId) ? wasmHeapView(t) : null;
}

/**
 * The wasm heap memory of any float32 tensor, for reading it without a copy (e.g. into shared memory);
 * null off wasm. Valid until the next tfjs allocation (a heap growth replaces the heap's views); never
 * write through it (kernels cache state keyed by tensor, see `unwrittenHeapView`).
 */
export function wasmHeapView(t: tf.Tensor): Float32Array | null {
  if (t.dtype !== 'float32' || tf.getBackend() !== 'wasm') return null;
  return (tf.backend() as unknown as WasmHeapBackend).typedArrayFromHeap(t) as Float32Array;
}

/** The tensor's memory now holds its data: from here on it changes only through tfjs. */
export function markWritten(t: tf.Tensor): void {
  unwritten.delete(t.dataId);
}
