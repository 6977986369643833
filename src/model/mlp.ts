import * as tf from '@tensorflow/tfjs';
import { CLIPVisionConfig } from '../config/clip';
import { Activation, activationByName } from './activations';
import { CompositeLayer } from './composite';
import { Linear } from './linear';
import { Module } from './module';

/** HF `CLIPMLP`: fc1 -> hidden_act -> fc2. */
export class CLIPMLP extends CompositeLayer {
  static readonly className = 'CLIPMLP';
  readonly config: CLIPVisionConfig;
  readonly fc1: Linear;
  readonly fc2: Linear;
  private readonly act: Activation;

  constructor(config: CLIPVisionConfig, args: { name?: string; trainable?: boolean } = {}) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    this.act = activationByName(config.hiddenAct);
    const { hiddenSize: d, intermediateSize: m } = config;
    this.fc1 = new Linear({ inFeatures: d, outFeatures: m, name: `${this.name}/fc1`, trainable: this.trainable });
    this.fc2 = new Linear({ inFeatures: m, outFeatures: d, name: `${this.name}/fc2`, trainable: this.trainable });
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return tf.tidy(() => this.fc2.call(this.act(this.fc1.call(x))));
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), config: { ...this.config } };
  }

  children(): Record<string, Module> {
    return { fc1: this.fc1, fc2: this.fc2 };
  }
}
tf.serialization.registerClass(CLIPMLP);
