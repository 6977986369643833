/** Projector training on a frozen tower: torch-exact Adam, losses, steps, save/load, feature cache. */
export { TorchAdam } from './adam';
export type { NamedTensor, TorchAdamConfig } from './adam';
export {
  blockedSum,
  encodeFeatureCache,
  featureKey,
  initProjector,
  loadFeatureCache,
  loadProjectorWeights,
  mseLoss,
  projectorGradients,
  projectorKeyMap,
  saveFeatureCache,
  saveProjector,
  seededRandom,
  trainStep,
  trainableVariables,
} from './projector_training';
export type {
  FeatureCacheOptions,
  LossFn,
  ProjectorGradients,
  ProjectorNames,
  SaveProjectorOptions,
  StepOptions,
} from './projector_training';
