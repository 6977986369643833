import { DownloadProgress, checkFileName, checkRevision, downloadModel, isRepoId } from '../io/hub';
import { UsageError, intOption, parseOptions, usageCheck } from './args';

export const DOWNLOAD_HELP = `download: a model from the HuggingFace hub into the local HF cache; prints its snapshot folder
  llava-vision download REPO_ID [--revision R] [--include-projector] [--cache-dir DIR] [--files LIST] [--refresh]

  REPO_ID              e.g. openai/clip-vit-large-patch14-336
  --revision R         branch, tag or commit (default main)
  --include-projector  also mm_projector.bin (LLaVA pretrain checkpoints)
  --files LIST         comma list of exact files instead of the default set (an *.index.json brings its shards)
  --cache-dir DIR      default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  --timeout SECONDS    a request that sends nothing for this long fails (default 30)
  --min-speed KB       a download averaging under KB kilobytes/s over any --timeout fails, and is retried
                       from where it stopped (default 1; 0: no minimum)
  --deadline SECONDS   the whole download fails when not done by then (default: none)
  --refresh            ask the hub even when the cache holds the revision (a moved branch); if the hub cannot
                       be reached, the cached snapshot is printed
  --quiet              no progress

  Default set: config.json, preprocessor_config.json (when present), then model.safetensors.index.json and its
  shards, else model.safetensors, else pytorch_model.bin(.index.json). When the cache already holds the
  revision with these files, nothing is requested (works offline); files already in the cache are never
  downloaded again. Environment: HF_TOKEN (gated or private repos), HF_ENDPOINT (a mirror), HF_HUB_OFFLINE=1
  (no request at all: only what the cache holds).

Example:
  llava-vision encode --model "$(llava-vision download openai/clip-vit-large-patch14-336)" photo.jpg --out tokens.safetensors`;

const SPEC = {
  revision: { type: 'string' },
  'include-projector': { type: 'boolean' },
  files: { type: 'string' },
  'cache-dir': { type: 'string' },
  timeout: { type: 'string' },
  'min-speed': { type: 'string' },
  deadline: { type: 'string' },
  refresh: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runDownload(
  argv: string[],
  io: { out: (s: string) => void; err: (s: string) => void },
): Promise<number> {
  const { values: o, positionals } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(DOWNLOAD_HELP + '\n');
    return 0;
  }
  if (positionals.length !== 1)
    throw new UsageError(`download needs exactly one REPO_ID (got ${positionals.length}; see --help)`);
  if (!isRepoId(positionals[0]))
    throw new UsageError(
      `${JSON.stringify(positionals[0])} is not a HuggingFace repo id (org/name: letters, digits, _ . -)`,
    );
  const timeout = intOption(o.timeout, 'timeout');
  if (timeout !== undefined && timeout < 1) throw new UsageError(`--timeout must be at least 1 second, got ${timeout}`);
  const minSpeed = intOption(o['min-speed'], 'min-speed');
  if (minSpeed !== undefined && minSpeed < 0)
    throw new UsageError(`--min-speed must be at least 0 KB/s, got ${minSpeed}`);
  const deadline = intOption(o.deadline, 'deadline');
  if (deadline !== undefined && deadline < 1)
    throw new UsageError(`--deadline must be at least 1 second, got ${deadline}`);
  const files = o.files
    ?.split(',')
    .map((f: string) => f.trim())
    .filter(Boolean);
  if (files?.length === 0) throw new UsageError('--files needs at least one file name');
  for (const f of files ?? []) {
    try {
      checkFileName(f, '--files');
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (o.revision !== undefined) usageCheck(() => checkRevision(o.revision!, '--revision'));
  const snapshot = await downloadModel(positionals[0], {
    revision: o.revision,
    includeProjector: o['include-projector'],
    files,
    cacheDir: o['cache-dir'],
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
    minBytesPerSecond: minSpeed === undefined ? undefined : minSpeed * 1000,
    deadlineMs: deadline === undefined ? undefined : deadline * 1000,
    refresh: o.refresh,
    onProgress: o.quiet ? undefined : downloadProgress(),
    log: (line) => io.err(`llava-vision: ${line}\n`),
  });
  io.out(snapshot + '\n');
  return 0;
}

/** Per-file byte progress on stderr, only when it is a terminal (a pipe or log gets nothing). */
export function downloadProgress(
  stream: NodeJS.WriteStream = process.stderr,
): ((p: DownloadProgress) => void) | undefined {
  if (!stream.isTTY) return undefined;
  let last = 0;
  let lastFile = '';
  return ({ file, bytes, total }) => {
    const done = total !== null && bytes >= total;
    const now = Date.now();
    if (file === lastFile && !done && now - last < 100) return; // at most ~10 redraws a second
    last = now;
    lastFile = file;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    stream.write(
      `\r\x1b[Kdownloading ${file} ${mb(bytes)}${total === null ? '' : ' / ' + mb(total)} MB${done ? '\n' : ''}`,
    );
  };
}
