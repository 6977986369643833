/**
 * The one place this package imports TensorFlow.js; everything else imports `./tf`. Users get the
 * same namespace as `tf` from the package (`import { tf } from 'llava-vision-tfjs'`).
 */
export * from '@tensorflow/tfjs';
