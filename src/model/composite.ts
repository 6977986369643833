import * as tf from '../tf';
import { Module, Param } from './module';
import { singleShape } from './tfjs_layer';

/**
 * A tfjs Layer made of sub-layers (attention, encoder layer, ...). tfjs only tracks the weights a
 * layer adds itself, so weight lists and the `trainable` flag are forwarded to the children here.
 */
export abstract class CompositeLayer extends tf.layers.Layer implements Module {
  abstract children(): Record<string, Module>;

  params(): Record<string, Param> {
    return {};
  }

  protected sublayers(): tf.layers.Layer[] {
    return collectLayers(this.children());
  }

  override get trainable(): boolean {
    return super.trainable;
  }

  override set trainable(value: boolean) {
    super.trainable = value;
    // The base constructor sets the flag before the children exist; they take it from their args then.
    if (this.built) for (const layer of this.sublayers()) layer.trainable = value;
  }

  override get trainableWeights(): tf.LayerVariable[] {
    return [...super.trainableWeights, ...this.sublayers().flatMap((l) => l.trainableWeights)];
  }

  override set trainableWeights(_weights: tf.LayerVariable[]) {
    throw new Error('trainableWeights of a composite layer cannot be set');
  }

  override get nonTrainableWeights(): tf.LayerVariable[] {
    return [...super.nonTrainableWeights, ...this.sublayers().flatMap((l) => l.nonTrainableWeights)];
  }

  override set nonTrainableWeights(_weights: tf.LayerVariable[]) {
    throw new Error('nonTrainableWeights of a composite layer cannot be set');
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return singleShape(inputShape);
  }
}

function collectLayers(children: Record<string, Module>): tf.layers.Layer[] {
  return Object.values(children).flatMap((m) => (m instanceof tf.layers.Layer ? [m] : collectLayers(m.children())));
}
