/**
 * llava-vision-tfjs: LLaVA's vision side — CLIP ViT tower, multimodal projector, image
 * preprocessing — on TensorFlow.js, loading HuggingFace / LLaVA checkpoints directly.
 */
export { LlavaVision, OUTPUT_NAMES } from './api/llava_vision';
export { detectCheckpointKind, detectLayout } from './loading/checkpoint_kinds';
export type { EncodeOptions, EncodeResult, LoadOptions, OutputName } from './api/llava_vision';
export { CLIPVisionTower } from './api/vision_tower';
export type { VisionTowerOptions } from './api/vision_tower';
export { encodeImages, encodePixelValues, encodePixelValuesAsync, SAVE_NAMES } from './api/encode_job';
export type {
  EncodedTensor,
  EncodeJobOptions,
  ImageFailure,
  ImageInput,
  ImageJobOptions,
  ImageJobResult,
  SaveName,
} from './api/encode_job';
export {
  openEncodedDataset,
  EncodedDataset,
  DEFAULT_SHARD_SIZE,
  checkDatasetDir,
  writeEncodedDataset,
} from './dataset';
export type { Batch, BatchOptions, DatasetFailure, EncodedImage, StoredTensor } from './dataset';
export type { DatasetPart, DatasetProgress, DatasetWriteOptions, DatasetWriteSummary } from './dataset';
export type { DatasetInfo, DatasetModel, DatasetNumerics, ManifestEntry, StoredDType } from './dataset';
export { expandInputs, readInputList, walkImages } from './dataset';
export { inspectCheckpoint } from './loading/inspect';
export type {
  InspectedTensor,
  InspectKind,
  InspectLayout,
  InspectOptions,
  InspectReport,
  LlavaSummary,
  RoleTotals,
  TensorRole,
  VisionSummary,
  VisionTowerSummary,
} from './loading/inspect';
export { openTensorSource, resolveVisionTower } from './loading/sources';
export type { OpenedSource, ResolveTowerOptions, SourceFormat } from './loading/sources';
export { downloadModel } from './io/hub';
export type { DownloadOptions, DownloadProgress } from './io/hub';
export type { CheckpointKind, Layout } from './loading/checkpoint_kinds';
export type { DType } from './io/dtype';
export { demoModelDir } from './demo';
export { initBackend, ensureBackend, BACKEND_ENV_VAR } from './backend';
export type { BackendChoice, BackendOptions } from './backend';
export type { GemmChoice, GemmName } from './model/kernels/gemm';
export { CLIP_VISION_DEFAULTS, clipVisionConfigFromJson } from './config/clip';
export type { CLIPVisionConfig, HiddenAct } from './config/clip';
export type { LlavaVisionSettings, MergeType, SelectFeature } from './config/llava';
export { BackendError, CheckpointError, ConfigError, ImageError, LlavaVisionError, OutputError } from './errors';
export { Checkpoint } from './io/checkpoint';
export { SafetensorsFile, writeSafetensors, writeSafetensorsStreaming } from './io/safetensors';
export type { RawTensor, Region, StreamedTensor, TensorInfo, TensorToWrite } from './io/safetensors';
export { TorchBinFile } from './io/torch_bin';
export type { TorchTensorInfo } from './io/torch_bin';
export * as image from './image';
export { CLIPVisionModel, CLIPVisionTransformer } from './model/vision_transformer';
export type { VisionForwardOptions, VisionModelOutput } from './model/vision_transformer';
// The blocks the tower and projector are made of (as types: their properties are public).
export type { CLIPVisionEmbeddings } from './model/embeddings';
export type { CLIPEncoderLayer } from './model/encoder_layer';
export type { CLIPAttention } from './model/attention';
export type { CLIPMLP } from './model/mlp';
export type { LayerNorm } from './model/layer_norm';
export type { Linear, LinearArgs } from './model/linear';
export type { CompositeLayer } from './model/composite';
export { TOWER_LAYOUTS, layoutForBackend } from './model/layout';
export { THREADS_ENV_VAR, availableCores } from './parallel/thread_count';
export type { ThreadsSummary } from './parallel/thread_count';
export type { FeatureRange } from './model/parallel/partition';
export type { TowerLayout } from './model/layout';
export { Projector, projectorDepth } from './model/projector';
export type { ProjectorConfig } from './model/projector';
export { mergeImageFeatures } from './model/merge';
export type { MergeOptions } from './model/merge';
export { loadWeights, exportWeights, prefaultWeights } from './model/weights';
export type { KeyMap, TensorSource } from './model/weights';
export { namedParams } from './model/module';
export type { Module, Param, WeightInit } from './model/module';
export type { Block } from './io/blocks';
export { checkParity, maxAbsDiff, parityBound, DEFAULT_PARITY_K } from './parity';
export type { ParityMeta, ParityResult } from './parity';
// Your own checkpoint against a PyTorch reference (python/llava_vision_reference.py); the matchers: llava-vision-tfjs/testing.
export { checkAgainstReference } from './api/check';
export type { CheckOptions, CheckReport, TensorCheck } from './api/check';
export { REFERENCE_FORMAT, ReferenceFile, readReference } from './check/reference';
export type { Reference, ReferenceMeta, ReferenceRun, ReferenceTensor } from './check/reference';
export type { ComparisonResult, NonFiniteCounts, Tolerance, WorstElement } from './check/compare';
export * as train from './train';
export * as tf from './tf';

// Preprocessed pixel values (what `llava-vision preprocess` writes) and models by hub id.
export { encodePreprocessed } from './api/encode_job';
export type { PreprocessedImage, PreprocessedJobOptions } from './api/encode_job';
export { readPixelValuesFile } from './api/pixel_values_file';
export type { PixelValuesFile } from './api/pixel_values_file';
export { readModelPreprocessing } from './loading/load_plan';
export type { ModelPreprocessing } from './loading/load_plan';
export { resolveModelDir } from './loading/sources';
export { cachedSnapshot, hubCacheDir, hubOffline } from './io/hub';
