/**
 * Every error this library raises on bad input is one of these, with a message that names the
 * file, tensor or option at fault. Callers can branch on the class; the CLI prints the message.
 */
export class LlavaVisionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A checkpoint file or folder is unreadable, malformed, or disagrees with its config. */
export class CheckpointError extends LlavaVisionError {}

/** A config file or option is missing, malformed or unsupported. */
export class ConfigError extends LlavaVisionError {}

/** An image file cannot be decoded or has an unsupported form. */
export class ImageError extends LlavaVisionError {}

/** An output file cannot be written (the message names the target, never a temp file). */
export class OutputError extends LlavaVisionError {}

/** The tfjs backend failed to run a computation (e.g. a GPU error), so its results are not valid. */
export class BackendError extends LlavaVisionError {}

/** Longest rendering of one value inside an error message (hostile files carry megabyte-long names). */
export const MAX_QUOTED_CHARS = 200;

/**
 * A value as it appears in an error message: JSON-quoted (so control characters cannot break the
 * one-line message), cut to `max` characters with the full length noted. Never throws.
 */
export function quote(x: unknown, max = MAX_QUOTED_CHARS): string {
  let s: string;
  try {
    // A long string is cut before quoting so a 5 MB name costs no 5 MB copy.
    const v = typeof x === 'string' && x.length > max ? x.slice(0, max) : x;
    s = typeof v === 'bigint' ? `${v}` : (JSON.stringify(v) ?? String(v));
    if (typeof x === 'string' && x.length > max) s = `${s.slice(0, -1)}…" (${x.length} chars)`;
  } catch {
    s = Object.prototype.toString.call(x); // e.g. a structure too deep to stringify
  }
  return s.length <= max + 32 ? s : `${s.slice(0, max)}… (${s.length} chars)`;
}

/**
 * Another library's message (JSON.parse's, libvips'), made one line to go inside ours: V8 quotes a
 * snippet of the text, which may hold line breaks, and libvips appends one line per layer.
 */
export function oneLine(message: string, max = 500): string {
  const flat = message.replace(/[\p{Cc}\u2028\u2029]+/gu, ' ').trim(); // control characters (NEL too) and line separators
  return flat.length <= max ? flat : `${flat.slice(0, max)}…`;
}

/** A shape for a message, `[2, 3]`; a hostile file's million dimensions are cut after 16. */
export function shapeText(shape: readonly number[]): string {
  const shown = shape.slice(0, 16).join(', ');
  return shape.length > 16 ? `[${shown}, … (${shape.length} dims)]` : `[${shown}]`;
}
