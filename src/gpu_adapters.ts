/**
 * WebGPU adapters in Node, through Dawn (Chrome's WebGPU implementation) from the npm package `webgpu`
 * (prebuilt for Linux, macOS and Windows on Vulkan, Metal, D3D12), an optional peer dependency.
 * No tfjs here: src/webgpu.ts registers the tfjs backend on the adapter found.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from './load_module';

export const WEBGPU_INSTALL = 'npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0';

/** An adapter Dawn offered, as the log and the errors show it. */
export interface GpuAdapterSummary {
  /** The native API Dawn drives it through: vulkan, metal, d3d12 or opengles. */
  api: string;
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software rasteriser (llvmpipe, lavapipe, SwiftShader, WARP): the CPU emulating a GPU. */
  cpu: boolean;
}

/** The parts of the WebGPU API (as Dawn's Node binding implements it) used here. */
export interface GpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter?: boolean;
}
export interface GpuDevice {
  lost: Promise<{ reason: string; message: string }>;
  onuncapturederror: ((event: { error: { message: string } }) => void) | null;
  destroy(): void;
}
export interface GpuAdapter {
  info: GpuAdapterInfo;
  limits: Record<string, unknown>;
  requestDevice(descriptor: { requiredLimits: Record<string, number> }): Promise<GpuDevice>;
}
export interface Gpu {
  requestAdapter(options: { powerPreference: string; featureLevel?: string }): Promise<GpuAdapter | null>;
}
export interface Dawn {
  create(flags: string[]): Gpu;
  globals: Record<string, unknown>;
}

/**
 * Where Dawn looks for an adapter, in order. OpenGL ES (compatibility feature level) is for Linux
 * machines without a Vulkan driver, notably Mesa's llvmpipe: a CPU emulation, useful for testing.
 * (Dawn's Vulkan backend rejects Debian 12's lavapipe.) `auto` looks at the native APIs only.
 */
interface Route {
  api: string;
  compatibility?: boolean;
}
const ROUTES: Record<string, Route[]> = {
  linux: [{ api: 'vulkan' }, { api: 'opengles', compatibility: true }],
  darwin: [{ api: 'metal' }],
  win32: [{ api: 'd3d12' }, { api: 'vulkan' }],
};

const SOFTWARE_RENDERERS = /llvmpipe|lavapipe|softpipe|swiftshader|basic render driver|\bwarp\b/i;

/**
 * Dawn's adapter type (CPU / integrated / discrete) is not exposed by its Node binding, so a CPU
 * adapter is told by its renderer's name, or by the WebGPU fallback-adapter flag.
 */
export function isCpuAdapter(info: {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}): boolean {
  return (
    !!info.isFallbackAdapter ||
    SOFTWARE_RENDERERS.test([info.vendor, info.architecture, info.device, info.description].join(' '))
  );
}

/** `vulkan: NVIDIA GeForce RTX 4090 (nvidia, lovelace, NVIDIA: 550.54)`, `…, a CPU emulation` for a CPU adapter. */
export function describeAdapter(a: GpuAdapterSummary): string {
  const details = [a.vendor, a.architecture, a.description].filter((s) => s !== '').join(', ');
  return `${a.api}: ${a.device || 'unnamed adapter'}${details ? ` (${details})` : ''}${a.cpu ? ', a CPU emulation' : ''}`;
}

/**
 * The best adapter Dawn offers (a real GPU first; with `gpuOnly`, nothing else), or why there is
 * none: one line naming what to install, or the adapters tried. Creates no device.
 */
export async function findAdapter(options: { gpuOnly: boolean }): Promise<FoundAdapter | string> {
  let dawn: Dawn;
  try {
    dawn = loadDawn();
    require.resolve('@tensorflow/tfjs-backend-webgpu');
  } catch (e) {
    if ((e as { code?: string }).code === 'MODULE_NOT_FOUND')
      return `the packages webgpu and @tensorflow/tfjs-backend-webgpu are not installed (${WEBGPU_INSTALL})`;
    return (e as Error).message.split('\n')[0];
  }
  const routes = (ROUTES[process.platform] ?? [{ api: 'vulkan' }]).filter((r) => !(options.gpuOnly && r.compatibility));
  const tried: string[] = [];
  let cpuFallback: FoundAdapter | null = null;
  for (const route of routes) {
    const found = await requestAdapter(dawn, route);
    if (typeof found === 'string') {
      tried.push(`${route.api}: ${found}`);
      continue;
    }
    if (!found.summary.cpu) return found;
    tried.push(describeAdapter(found.summary));
    cpuFallback ??= found;
  }
  if (cpuFallback && !options.gpuOnly) return cpuFallback;
  return `${cpuFallback ? 'only a CPU adapter' : 'no WebGPU adapter'} (tried ${tried.join('; ')})`;
}

/**
 * `webgpu` is an ES module, and this package is CommonJS (requiring an ES module needs Node >= 20.19
 * or 22.12, and Jest cannot): its entry point only picks the prebuilt Dawn binary for the platform,
 * so that binary is loaded directly.
 */
function loadDawn(): Dawn {
  const root = path.dirname(require.resolve('webgpu/package.json'));
  const platform = `${process.platform}-${process.platform === 'darwin' ? 'universal' : process.arch}`;
  const binary = path.join(root, 'dist', platform, 'dawn.node');
  try {
    return loadModule(binary) as Dawn;
  } catch (e) {
    if ((e as { code?: string }).code === 'MODULE_NOT_FOUND')
      throw new Error(`the webgpu package has no Dawn binary for ${platform} (${binary})`);
    throw e;
  }
}

export interface FoundAdapter {
  gpu: Gpu;
  globals: Dawn['globals'];
  adapter: GpuAdapter;
  summary: GpuAdapterSummary;
}

/**
 * Whether Linux's Vulkan loader is installed. Without it Dawn prints a multi-line "Couldn't load
 * Vulkan" warning straight to stderr (nothing in JS can silence it), so that route is not tried.
 */
function vulkanLoaderPresent(): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/lib',
    '/lib64',
    '/lib',
  ];
  return dirs.some((dir) => fs.existsSync(path.join(dir, 'libvulkan.so.1')));
}

/** The route's adapter, or why there is none. */
async function requestAdapter(dawn: Dawn, route: Route): Promise<FoundAdapter | string> {
  if (route.api === 'vulkan' && process.platform === 'linux' && !vulkanLoaderPresent())
    return 'no Vulkan loader (libvulkan.so.1) installed';
  // Mesa's EGL needs no display for compute when told so; without it a headless machine has no GL.
  if (route.api === 'opengles' && process.platform === 'linux') process.env.EGL_PLATFORM ??= 'surfaceless';
  try {
    const gpu = dawn.create([`backend=${route.api}`]);
    const adapter = await gpu.requestAdapter({
      powerPreference: 'high-performance',
      ...(route.compatibility ? { featureLevel: 'compatibility' } : {}),
    });
    if (!adapter) return 'none';
    const i = adapter.info;
    const summary = {
      api: route.api,
      vendor: i.vendor,
      architecture: i.architecture,
      device: i.device,
      description: i.description,
      cpu: isCpuAdapter(i),
    };
    return { gpu, globals: dawn.globals, adapter, summary };
  } catch (e) {
    return String((e as Error).message ?? e).split('\n')[0];
  }
}

/** Whether the `webgpu` package is installed (it may still find no adapter). */
export function webGpuInstalled(): boolean {
  try {
    require.resolve('webgpu/package.json');
    return true;
  } catch {
    return false;
  }
}
