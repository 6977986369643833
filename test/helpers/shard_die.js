// A shard-thread entry for test/threads.test.ts (ShardTeam.entry): the shipped entry, plus a request
// after which the thread ends itself on its next step, as a thread killed by the OS (e.g. out of memory) would.
const path = require('path');
const { extendShardRequests } = require(path.resolve(__dirname, '../../dist/src/parallel/tensor/worker.js'));

extendShardRequests((request, ctx) => {
  if (request.kind !== 'dieOnNextStep') throw new Error(`no test request ${request.kind}`);
  ctx.compute.partial = () => process.exit(3);
  return null;
});
