/**
 * The one place this package imports TensorFlow.js; everything else imports `./tf`. Users get the
 * same namespace as `tf` from the package (`import { tf } from 'llava-vision-tfjs'`).
 *
 * It is tfjs-core + tfjs-layers, not the `@tensorflow/tfjs` bundle (webgl, converter and data are
 * never used here). The packages are peer dependencies, so the app's copy is the one used.
 * - Gradients: tfjs-core's CommonJS build does not register them; tfjs-layers' does (all of
 *   tfjs-core's, for `fit()`), which is what `tf.variableGrads` and the projector training use.
 * - Chained ops (`x.reshape(...)`) are not registered (only the bundle does that): use the
 *   functional ops, `tf.reshape(x, ...)`, as tfjs's own libraries do.
 */
import { requireOptionalPeer } from './tf_peers';
export * from '@tensorflow/tfjs-core';
export * from '@tensorflow/tfjs-layers';

// The pure-JS cpu backend, registered on import as the bundle does, so `tf` works before
// initBackend picks a faster one. An optional peer: npm installs it with tfjs-backend-wasm.
requireOptionalPeer('@tensorflow/tfjs-backend-cpu');
