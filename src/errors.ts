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
