import * as tf from '@tensorflow/tfjs';
import { Module, Param, transpose2d } from './module';

export interface LinearArgs {
  inFeatures: number;
  outFeatures: number;
  bias?: boolean;
  name?: string;
  trainable?: boolean;
}

/**
 * `torch.nn.Linear`. The kernel is stored as [in, out] (the checkpoint's weight transposed once
 * at load time): tfjs-backend-wasm only takes its XNNPACK fast path for non-transposed operands.
 * Works on any [..., in] input by flattening the leading axes into one GEMM.
 */
export class Linear extends tf.layers.Layer implements Module {
  static readonly className = 'LlavaVisionLinear';
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly useBias: boolean;
  kernel!: tf.LayerVariable;
  bias: tf.LayerVariable | null = null;

  constructor(args: LinearArgs) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.inFeatures = args.inFeatures;
    this.outFeatures = args.outFeatures;
    this.useBias = args.bias ?? true;
    this.build([null, this.inFeatures]);
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    if (this.built) return;
    const zeros = tf.initializers.zeros();
    this.kernel = this.addWeight('kernel', [this.inFeatures, this.outFeatures], 'float32', zeros, undefined, true);
    if (this.useBias) this.bias = this.addWeight('bias', [this.outFeatures], 'float32', zeros, undefined, true);
    // Weights are added as trainable and the layer's flag applied through its setter, so a frozen
    // tower can later be unfrozen (tfjs never moves weights added as non-trainable).
    this.trainable = this.trainable;
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2d = x.reshape([-1, this.inFeatures]);
      const y = tf.fused.matMul({ a: x2d, b: this.kernel.read(), bias: this.bias?.read() });
      return lead.length === 1 ? y : y.reshape([...lead, this.outFeatures]);
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    return [...s.slice(0, -1), this.outFeatures];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), inFeatures: this.inFeatures, outFeatures: this.outFeatures, bias: this.useBias };
  }

  params(): Record<string, Param> {
    const [inF, outF] = [this.inFeatures, this.outFeatures];
    const p: Record<string, Param> = {
      weight: {
        variable: this.kernel,
        checkpointShape: [outF, inF],
        fromCheckpoint: (w) => transpose2d(w, outF, inF),
        toCheckpoint: (k) => transpose2d(k, inF, outF),
      },
    };
    if (this.bias) p.bias = { variable: this.bias, checkpointShape: [outF] };
    return p;
  }

  children(): Record<string, Module> {
    return {};
  }
}
tf.serialization.registerClass(Linear);
