/**
 * zlib's inflate() one call at a time, as C code that drives it sees it: the input and output
 * windows of each call, how much of each was used, and the error if one was found.
 *
 * Pillow's PNG decoder (ZipDecode.c) asks inflate for one row at a time, out of the pieces its
 * reader hands it. Whether a damaged stream fails depends on where those calls stop (an error
 * after the last row is only seen if it lies in the input of the call that completes that row),
 * so reproducing Pillow's verdict needs calls with the same windows. node:zlib's public API
 * inflates whole buffers; its handle (`_handle.writeSync`, there since Node 12) runs exactly one
 * inflate() per call. A Node without it fails loudly here rather than decode differently.
 */
import * as zlib from 'zlib';

interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
  ): void;
  onerror: (message: string, errno: number) => void;
}

export interface InflateStep {
  /** Output bytes written. */
  written: number;
  /** Input bytes consumed. */
  consumed: number;
  /** zlib's message when inflate() returned an error (Z_DATA_ERROR, Z_NEED_DICT, ...). */
  error?: string;
}

export class SteppedInflate {
  private readonly stream: zlib.Inflate;
  private readonly handle: ZlibHandle;
  private readonly state: Uint32Array;
  private error: string | undefined;

  constructor() {
    this.stream = zlib.createInflate();
    const internals = this.stream as unknown as { _handle?: ZlibHandle; _writeState?: Uint32Array };
    // No instanceof: under jest the typed array comes from another realm.
    if (
      !internals._handle ||
      typeof internals._handle.writeSync !== 'function' ||
      !ArrayBuffer.isView(internals._writeState)
    ) {
      throw new Error(
        `node:zlib of Node ${process.version} has no synchronous handle (_handle.writeSync), which the PNG reader needs`,
      );
    }
    this.handle = internals._handle;
    this.state = internals._writeState;
    this.handle.onerror = (message: string) => {
      this.error = message;
    };
  }

  /**
   * One inflate() call. `finish` passes Z_FINISH: node:zlib then reports a call that neither ends
   * the stream nor fills the output as the error 'unexpected end of file' (zlib's Z_BUF_ERROR,
   * which leaves the stream usable), so a call that returns without error and with room left in
   * the output has reached the end of the stream.
   */
  step(
    input: Uint8Array,
    inOff: number,
    inLen: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
    finish = false,
  ): InflateStep {
    this.error = undefined;
    this.state[0] = outLen;
    this.state[1] = inLen;
    this.handle.writeSync(
      finish ? zlib.constants.Z_FINISH : zlib.constants.Z_NO_FLUSH,
      input,
      inOff,
      inLen,
      out,
      outOff,
      outLen,
    );
    if (this.error !== undefined) return { written: 0, consumed: 0, error: this.error };
    return { written: outLen - this.state[0], consumed: inLen - this.state[1] };
  }

  close(): void {
    this.stream.close();
  }

  /** A reset inflater (creating one costs more than many small inflations): give it back with release(). */
  static acquire(): SteppedInflate {
    const z = idle.pop();
    if (!z) return new SteppedInflate();
    z.stream.reset();
    return z;
  }

  release(): void {
    if (idle.length < 4) idle.push(this);
    else this.close();
  }
}

const idle: SteppedInflate[] = [];
