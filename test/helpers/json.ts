/**
 * JSON files of the tests, typed where they are read: a fixture's case.json, a model's config.json
 * (edited by tests that break it), a safetensors header.
 */
import * as fs from 'fs';

/** The parsed file, as the caller says it is (the test's own assertions check that it is). */
export function readJson<T = unknown>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** A JSON object whose fields a test reads or replaces freely (a config.json, a tensor header). */
export interface JsonObject {
  [key: string]: JsonValue;
}
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;

/** A JSON object inside one (`config.vision_config`), for editing. */
export function objectAt(json: JsonObject, key: string): JsonObject {
  const v = json[key];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${key} is not a JSON object`);
  return v;
}

/** Rewrites a JSON file after `edit` changed it. */
export function editJson(file: string, edit: (json: JsonObject) => void): void {
  const json = readJson<JsonObject>(file);
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

export interface ExpectedMeta {
  shape: number[];
  dtype: string;
  exact?: boolean;
  torch_fp32_max_abs_err?: number;
  f32_storage_max_abs_err?: number;
  ref_max_abs?: number;
}

export interface CaseImage {
  id: string;
  file: string;
  image_size_wh?: [number, number];
  pixel_values_shape?: number[];
  best_resolution_wh?: [number, number];
  grid_wh?: [number, number];
}

/** test/fixtures/cases/<name>/case.json, as far as the tests read it. */
export interface CaseJson {
  name: string;
  kind: string;
  layout: string | null;
  vision_config: { hidden_size: number; num_hidden_layers: number; image_size: number } | null;
  images: CaseImage[];
  variants?: { name: string; preprocessor_config: string; images: CaseImage[] }[];
  run: {
    interpolate_pos_encoding?: boolean;
    loss?: string;
    sgd?: { lr: number; momentum: number; weight_decay: number };
    adam?: { lr: number; betas: [number, number]; eps: number; weight_decay: number; amsgrad: boolean; step: number };
  };
  expected: Record<string, ExpectedMeta>;
}
