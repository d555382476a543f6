// Runs one ONNX model in ONNX Runtime (CPU) on one input and writes its
// first output, for tests that compare an export with LibTorch:
//   node run_model.js --model M.onnx --input X.bin --shape D0,D1,...
//                     --output Y.bin [--dtype float32|int64]
// X.bin holds the input's values (little-endian, row-major; float32 unless
// --dtype int64, as a language model's token ids); Y.bin gets the float32
// output's the same way. Prints one JSON line: the runtime's version and
// the output's shape. Exits 2 on bad arguments. Graph optimizations are
// ONNX Runtime's default (all) unless --graph_optimization says otherwise
// (disabled runs QDQ models as written, without fusing them into integer
// kernels).
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');
const {parseArgs} = require('./args');

async function main() {
  let args;
  try {
    args = parseArgs(process.argv, ['model', 'input', 'shape', 'output'],
                     '--model M --input X --shape D0,D1 --output Y');
  } catch (e) {
    console.error(`run_model: ${e.message}`);
    process.exit(2);
  }
  const shape = args.shape.split(',').map(Number);
  const dtype = args.dtype || 'float32';
  if (dtype !== 'float32' && dtype !== 'int64') {
    console.error(`run_model: --dtype must be float32 or int64, not ${dtype}`);
    process.exit(2);
  }
  const bytes = fs.readFileSync(args.input);
  const values = dtype === 'int64'
      ? new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8)
      : new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const count = shape.reduce((a, b) => a * b, 1);
  if (values.length !== count) {
    console.error(`run_model: ${args.input} holds ${values.length} ` +
                  `${dtype} values, shape ${args.shape} needs ${count}`);
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    graphOptimizationLevel: args.graph_optimization || 'all',
  });
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor(dtype, values, shape);
  const results = await session.run(feeds);
  const out = results[session.outputNames[0]];
  fs.writeFileSync(args.output, Buffer.from(out.data.buffer, out.data.byteOffset,
                                            out.data.byteLength));
  console.log(JSON.stringify({
    ort_version: require('onnxruntime-node/package.json').version,
    dims: out.dims,
  }));
}

main().catch((e) => {
  console.error(`run_model: ${e.message}`);
  process.exit(1);
});
