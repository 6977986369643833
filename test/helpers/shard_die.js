// A shard-thread hook for test/threads.test.ts: the thread ends itself on its next step, as a thread
// killed by the OS (e.g. out of memory) would.
exports.shardHooks = {
  dieOnNextStep: (ctx) => {
    ctx.compute.partial = () => process.exit(3);
    return null;
  },
};
