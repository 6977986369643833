/** A one-line progress bar with images/s on stderr, drawn only when stderr is a terminal. */
export function progressBar(
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
): ((done: number, total: number) => void) & { end(): void } {
  const start = performance.now();
  let drawn = false;
  const update = (done: number, total: number) => {
    if (!stream.isTTY) return;
    const width = 24;
    const filled = Math.round((done / Math.max(total, 1)) * width);
    const rate = done / Math.max((performance.now() - start) / 1000, 1e-9);
    stream.write(
      `\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${rate.toFixed(2)} images/s`,
    );
    drawn = true;
  };
  return Object.assign(update, {
    end() {
      if (drawn) stream.write('\n');
    },
  });
}

export interface JobProgress {
  /** Images finished so far (skipped ones included), of `total`; `skipped` were done by an earlier run. */
  update(p: { done: number; total: number; failed: number; skipped?: number }): void;
  end(): void;
}

/**
 * Progress of a long job: a bar on a terminal; elsewhere (a batch job, a log file) one line every
 * `intervalMs`, so a log shows the job is alive and when it will end without a line per image.
 */
export function jobProgress(options: {
  label: string;
  write: (s: string) => void;
  isTTY: boolean;
  intervalMs?: number;
  now?: () => number;
}): JobProgress {
  const now = options.now ?? (() => performance.now());
  const interval = options.intervalMs ?? 5000;
  const start = now();
  let last = start;
  let drawn = false;
  return {
    update({ done, total, failed, skipped = 0 }) {
      const t = now();
      const rate = (done - skipped) / Math.max((t - start) / 1000, 1e-9);
      const eta = rate > 0 ? formatDuration((total - done) / rate) : '?';
      const failures = failed ? `, ${failed} failed` : '';
      if (options.isTTY) {
        const width = 24;
        const filled = Math.round((done / Math.max(total, 1)) * width);
        options.write(
          `\r${options.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${rate.toFixed(2)} images/s, ETA ${eta}${failures}  `,
        );
        drawn = true;
      } else if (t - last >= interval) {
        last = t;
        const percent = ((100 * done) / Math.max(total, 1)).toFixed(1);
        options.write(
          `${options.label}: ${done}/${total} images (${percent}%), ${rate.toFixed(2)} images/s, ETA ${eta}${failures}\n`,
        );
      }
    },
    end() {
      if (drawn) options.write('\n');
    },
  };
}

/** 3725 s -> "1h02m05s"; 65 -> "1m05s"; 4.2 -> "4s". */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (h) return `${h}h${pad(m)}m${pad(s % 60)}s`;
  if (m) return `${m}m${pad(s % 60)}s`;
  return `${s}s`;
}
