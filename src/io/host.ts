/**
 * Who is writing: this host and process, as recorded in lock files and temp names, and whether a
 * recorded process is still running. A pid means something only inside its own pid namespace on its
 * own boot of its own machine: two containers on one host, or two hosts sharing a filesystem, have
 * unrelated pids. So a process is judged dead by its pid only when it ran on this boot and in this pid
 * namespace; anything else is judged by time (the lock's heartbeat, a temp file's age).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';

export interface HostIdentity {
  hostname: string;
  /** Linux: /proc/sys/kernel/random/boot_id (new on every boot); null elsewhere. */
  bootId: string | null;
  /** Linux: the pid namespace (`pid:[4026531836]`): containers on one host have their own. */
  pidNamespace: string | null;
}

export interface ProcessIdentity extends HostIdentity {
  pid: number;
  /** When the process started, in clock ticks since boot (/proc/<pid>/stat): tells a reused pid apart. Null off Linux. */
  startTime: string | null;
}

const readTrimmed = (file: string): string | null => {
  try {
    return fs.readFileSync(file, 'utf8').trim() || null;
  } catch {
    return null;
  }
};

let host: HostIdentity | undefined;

export function thisHost(): HostIdentity {
  if (!host) {
    let pidNamespace: string | null = null;
    try {
      pidNamespace = fs.readlinkSync('/proc/self/ns/pid');
    } catch {
      // not Linux, or /proc not mounted
    }
    host = { hostname: os.hostname(), bootId: readTrimmed('/proc/sys/kernel/random/boot_id'), pidNamespace };
  }
  return host;
}

export function thisProcess(): ProcessIdentity {
  return { ...thisHost(), pid: process.pid, startTime: processStartTime(process.pid) };
}

/** 8 hex digits naming this host's boot and pid namespace (in temp file names: whose pid it is). */
export function hostTag(h: HostIdentity = thisHost()): string {
  return createHash('sha256')
    .update(`${h.hostname}\n${h.bootId ?? ''}\n${h.pidNamespace ?? ''}`)
    .digest('hex')
    .slice(0, 8);
}

/** Are pids of `h` this process's pids: the same boot and pid namespace (off Linux: the same host name). */
export function pidsComparable(h: HostIdentity): boolean {
  const me = thisHost();
  if (me.bootId && me.pidNamespace)
    return h.bootId === me.bootId && h.pidNamespace === me.pidNamespace && h.hostname === me.hostname;
  return h.bootId === null && h.pidNamespace === null && h.hostname === me.hostname;
}

/** Field 22 of /proc/<pid>/stat (starttime), or null. The command name (field 2) may hold spaces and parentheses. */
export function processStartTime(pid: number): string | null {
  const stat = readTrimmed(`/proc/${pid}/stat`);
  if (!stat) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null; // fields[0] is field 3 (state)
}

/** Is process `pid` (of this boot and namespace) running, and the same process when `startTime` is known. */
export function processAlive(pid: number, startTime: string | null): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (startTime === null) return true;
  const now = processStartTime(pid);
  return now === null || now === startTime;
}
