/**
 * llava-vision-tfjs/testing: numerical matchers for Jest and Vitest, and reference files.
 *
 *   import { matchers, readReference } from 'llava-vision-tfjs/testing';
 *   expect.extend(matchers);
 *   expect(out.features).toMatchReference(readReference('ref.safetensors').features);
 *
 * No runtime dependency on jest, vitest or tfjs. The declarations below add the matchers to the type
 * of `expect(...)` in Jest (the global `expect` of `@types/jest`, and `@jest/globals`) and in Vitest
 * (whose assertions extend the same global `jest.Matchers` interface), once this module is imported.
 */
// Brings Jest's 'expect' package into the build so the augmentation below compiles; an empty type-only
// import, so neither the JavaScript nor the declarations load or need it.
import type {} from 'expect';
import { AllCloseOptions, MatchReferenceOptions, ReferenceLike } from './matchers';
import { TensorLike } from './tensor_like';

export { matchers, toBeAllClose, toHaveShape, toMatchReference, referenceTolerance } from './matchers';
export type {
  AllCloseOptions,
  MatchReferenceOptions,
  MatcherContextLike,
  MatcherResult,
  ReferenceLike,
} from './matchers';
export type { ArrayView, NestedNumbers, NumericArray, ShapedData, TensorLike, TensorWithData } from './tensor_like';
export { toArrayView } from './tensor_like';
export { REFERENCE_FORMAT, ReferenceFile, readReference } from '../check/reference';
export type { Reference, ReferenceMeta, ReferenceRun, ReferenceTensor } from '../check/reference';
export { Comparison, compareArrays } from '../check/compare';
export type { ComparisonResult, NonFiniteCounts, Tolerance, WorstElement } from '../check/compare';

/** The matchers as they appear on `expect(received)`; R is what the test framework's matchers return. */
export interface LlavaVisionMatchers<R> {
  /** numpy.allclose: |received − expected| ≤ atol + rtol·|expected| element by element (defaults rtol 1e-5, atol 1e-8). */
  toBeAllClose(expected: TensorLike, options?: AllCloseOptions): R;
  /** max|received − truth| ≤ bound · torch_fp32_max_abs_err + f32_storage_max_abs_err (bound 4), from a reference entry's metadata. */
  toMatchReference(reference: ReferenceLike, options?: MatchReferenceOptions): R;
  toHaveShape(shape: readonly number[]): R;
}

declare global {
  // `@types/jest` (Jest's global expect) and Vitest both declare `jest.Matchers<R, T = {}>`: Vitest's
  // assertions extend it.
  namespace jest {
    interface Matchers<R, T> extends LlavaVisionMatchers<R> {}
  }
}

// `import { expect } from '@jest/globals'`: the expect package's own interface. Where no 'expect'
// package is installed (a Vitest project), TypeScript leaves this augmentation out.
declare module 'expect' {
  interface Matchers<R extends void | Promise<void>, T> extends LlavaVisionMatchers<R> {}
}
