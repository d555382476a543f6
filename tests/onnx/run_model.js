// Runs one ONNX model in ONNX Runtime (CPU) on one float32 input and writes
// its first output, for tests that compare a layer's export with LibTorch:
//   node run_model.js --model M.onnx --input X.bin --shape D0,D1,...
//                     --output Y.bin
// X.bin holds the input's float32 values (little-endian, row-major); Y.bin
// gets the output's the same way. Prints one JSON line: the runtime's
// version and the output's shape. Exits 2 on bad arguments.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const args = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument '${argv[i]}'; usage: --model M --input X ` +
                      '--shape D0,D1 --output Y');
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const required of ['model', 'input', 'shape', 'output']) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  return args;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv);
  } catch (e) {
    console.error(`run_model: ${e.message}`);
    process.exit(2);
  }
  const shape = args.shape.split(',').map(Number);
  const bytes = fs.readFileSync(args.input);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset,
                                  bytes.length / 4);
  const count = shape.reduce((a, b) => a * b, 1);
  if (values.length !== count) {
    console.error(`run_model: ${args.input} holds ${values.length} floats, ` +
                  `shape ${args.shape} needs ${count}`);
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
  });
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor('float32', values, shape);
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
