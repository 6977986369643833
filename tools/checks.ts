/**
 * The PASS / FAIL lines of the end-to-end scripts (`npm run test:package`, `npm run test:slurm`): one
 * line per check with the seconds since the previous one, the last lines of what explains a failure,
 * and the counts for the script's summary line.
 */
export class Checks {
  passed = 0;
  failed = 0;
  private last = Date.now();

  /** `detailLines`: how many last lines of a failure's detail are printed. */
  constructor(private readonly detailLines: number) {}

  /** Prints the check's line; returns `ok`. */
  readonly check = (name: string, ok: boolean, detail = ''): boolean => {
    if (ok) this.passed++;
    else this.failed++;
    const seconds = ((Date.now() - this.last) / 1000).toFixed(1);
    this.last = Date.now();
    const shown = ok || !detail ? '' : `\n     ${detail.trim().split('\n').slice(-this.detailLines).join('\n     ')}`;
    console.log(`${ok ? 'PASS' : 'FAIL'} ${name} (${seconds} s)${shown}`);
    return ok;
  };
}
