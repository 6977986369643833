/** A one-line progress bar with images/s on stderr, drawn only when stderr is a terminal. */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ((done: number, total: number) => void) & { end(): void } {
  const start = performance.now();
  let drawn = false;
  const update = (done: number, total: number) => {
    if (!stream.isTTY) return;
    const width = 24;
    const filled = Math.round((done / Math.max(total, 1)) * width);
    const rate = done / Math.max((performance.now() - start) / 1000, 1e-9);
    stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${rate.toFixed(2)} images/s`);
    drawn = true;
  };
  return Object.assign(update, {
    end() {
      if (drawn) stream.write('\n');
    },
  });
}
