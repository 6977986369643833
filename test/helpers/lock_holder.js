// For test/dataset_lock.test.ts: takes a folder's writer lock in a process of its own (the compiled
// library), says on stdout whether it got it, holds it for HOLD_MS, then releases it.
//   node lock_holder.js DIR HOLD_MS [HEARTBEAT_MS] [busy]
// `busy`: the main thread is blocked (a long synchronous forward) for the whole hold.
const { setTimeout } = require('timers');
const { FolderLock } = require('../../dist/src/io/folder_lock.js');

const [dir, holdMs, heartbeatMs, busy] = process.argv.slice(2);
let lock;
try {
  lock = FolderLock.acquire(dir, 'a test holder', heartbeatMs ? { heartbeatMs: Number(heartbeatMs) } : {});
} catch (e) {
  process.stdout.write(`refused ${e.constructor.name}: ${e.message}\n`);
  process.exit(0);
}
process.stdout.write('held\n');
if (busy) {
  const until = Date.now() + Number(holdMs);
  while (Date.now() < until) {
    /* blocked */
  }
  lock.release();
} else {
  setTimeout(() => lock.release(), Number(holdMs));
}
