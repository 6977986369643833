import * as tf from '../tf';

/**
 * What every layer here does the same way with tfjs's Layer API. tfjs passes a layer its input as one
 * tensor or a list, and its input shape as one shape or a list; these layers take one.
 */
export function singleInput<T extends tf.Tensor = tf.Tensor>(inputs: tf.Tensor | tf.Tensor[]): T {
  return (Array.isArray(inputs) ? inputs[0] : inputs) as T;
}

export function singleShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
}

/**
 * Ends a layer's `build`: its weights are added as trainable and the layer's flag applied through its
 * setter, so a frozen tower can later be unfrozen (tfjs never moves weights added as non-trainable).
 */
export function applyTrainableFlag(layer: tf.layers.Layer): void {
  const trainable = layer.trainable;
  layer.trainable = trainable; // through the setter, which moves the weights to match
}
