/**
 * TensorFlow.js comes from the app's own install (peer dependencies: one tfjs-core per process,
 * the version the app chose). npm 7+ installs missing peers itself; yarn 1, pnpm without
 * auto-install-peers and `npm --legacy-peer-deps` do not, so say in one line what to install
 * rather than fail with a require stack. Loaded before the first tfjs import (src/tf.ts).
 */
import { ConfigError } from './errors';
import { loadModule } from './load_module';

/** The TensorFlow.js version this package is developed and tested with (its lockfile pins it). */
export const TESTED_TFJS_VERSION = '4.22.0';

const REQUIRED_PEERS = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers'];

function installedVersion(name: string): string | null {
  try {
    return String((loadModule(`${name}/package.json`) as { version?: unknown }).version);
  } catch {
    return null;
  }
}

/** The install command for tfjs packages: all at the version of the tfjs-core already there, if any. */
export function tfjsInstallHint(names: string[]): string {
  const version = installedVersion('@tensorflow/tfjs-core') ?? TESTED_TFJS_VERSION;
  return `npm install ${names.map((name) => `${name}@${version}`).join(' ')}`;
}

const missing = REQUIRED_PEERS.filter((name) => installedVersion(name) === null);
if (missing.length > 0) {
  throw new ConfigError(
    `llava-vision-tfjs needs ${missing.join(', ')} (peer dependencies): ${tfjsInstallHint([...missing, '@tensorflow/tfjs-backend-wasm'])}`,
  );
}

/** Loads an optional tfjs package for its side effects (registering a backend); false when it is not installed. */
export function requireOptionalPeer(name: string): boolean {
  try {
    loadModule(name);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === 'MODULE_NOT_FOUND' && installedVersion(name) === null) return false;
    throw e;
  }
}
