/**
 * Encoded datasets: a folder of safetensors shards and their manifest (format.ts), written from an
 * image list through a model (writer.ts; inputs.ts walks folders and reads lists) and read back by
 * index or in shuffled batches (reader.ts). What other folders use of it, in one place.
 */
export { openEncodedDataset, EncodedDataset } from './reader';
export type { Batch, BatchOptions, DatasetFailure, EncodedImage, StoredTensor } from './reader';
export { DEFAULT_SHARD_SIZE, checkDatasetDir, writeEncodedDataset } from './writer';
export type { DatasetPart, DatasetProgress, DatasetWriteOptions, DatasetWriteSummary } from './writer';
export { MAX_PARTS, STORED_DTYPES } from './format';
export type { DatasetInfo, DatasetModel, DatasetNumerics, ManifestEntry, StoredDType } from './format';
export { expandInputs, inputFileProblem, readInputList, walkImages } from './inputs';
