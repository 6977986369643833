/**
 * llava-vision-tfjs: LLaVA's vision side — CLIP ViT tower, multimodal projector, image
 * preprocessing — on TensorFlow.js, loading HuggingFace / LLaVA checkpoints directly.
 */
export { LlavaVision, OUTPUT_NAMES, detectLayout } from './api/llava_vision';
export type { EncodeOptions, EncodeResult, LoadOptions, OutputName } from './api/llava_vision';
export { CLIPVisionTower } from './api/vision_tower';
export type { VisionTowerOptions } from './api/vision_tower';
export { encodeImages, encodePixelValues, encodePixelValuesAsync, SAVE_NAMES } from './api/encode_job';
export type { EncodeJobOptions, ImageJobOptions, ImageJobResult, SaveName } from './api/encode_job';
export { inspectCheckpoint } from './api/inspect';
export type { InspectReport } from './api/inspect';
export { openTensorSource, resolveVisionTower } from './api/sources';
export { downloadModel } from './io/hub';
export { initBackend, BACKEND_ENV_VAR } from './backend';
export type { BackendChoice, BackendOptions } from './backend';
export { CLIP_VISION_DEFAULTS, clipVisionConfigFromJson } from './config/clip';
export type { CLIPVisionConfig, HiddenAct } from './config/clip';
export type { LlavaVisionSettings, MergeType, SelectFeature } from './config/llava';
export { BackendError, CheckpointError, ConfigError, ImageError, LlavaVisionError, OutputError } from './errors';
export { Checkpoint } from './io/checkpoint';
export { SafetensorsFile, writeSafetensors, writeSafetensorsStreaming } from './io/safetensors';
export type { StreamedTensor, TensorToWrite } from './io/safetensors';
export { TorchBinFile } from './io/torch_bin';
export * as image from './image';
export { CLIPVisionModel, CLIPVisionTransformer } from './model/vision_transformer';
export type { VisionModelOutput } from './model/vision_transformer';
export { TOWER_LAYOUTS, layoutForBackend } from './model/layout';
export type { TowerLayout } from './model/layout';
export { Projector, projectorDepth } from './model/projector';
export { mergeImageFeatures } from './model/merge';
export { loadWeights, exportWeights, prefaultWeights } from './model/weights';
export { buildForLoading, namedParams } from './model/module';
export { checkParity, maxAbsDiff, DEFAULT_PARITY_K } from './parity';
export * as train from './train';
export * as tf from './tf';
