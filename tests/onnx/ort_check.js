// Runs the QAT stage's exported models in ONNX Runtime (CPU) on the whole
// Fashion-MNIST test set and prints one JSON line comparing them with what
// the framework computed in LibTorch:
//   node ort_check.js --qat_dir RUN/qat --data DIR
// reads RUN/qat/student_int8.onnx, student_fp32.onnx, int8_predictions.bin
// (uint8 argmax per sample from the C++ fake-quant evaluation) and
// fp32_logits.bin (float32 [N, C] from LibTorch). Exits 2 on bad input.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const args = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument '${argv[i]}'; usage: --qat_dir DIR --data DIR`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const required of ['qat_dir', 'data']) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  return args;
}

// An IDX file (optionally gzipped): magic, dims, then uint8 data.
function readIdx(file) {
  let bytes = fs.readFileSync(file);
  if (file.endsWith('.gz')) bytes = zlib.gunzipSync(bytes);
  const dims = bytes[3];
  const shape = [];
  for (let d = 0; d < dims; ++d) shape.push(bytes.readUInt32BE(4 + 4 * d));
  return { shape, data: bytes.subarray(4 + 4 * dims) };
}

function findIdx(dir, name) {
  for (const candidate of [name + '.gz', name]) {
    const file = path.join(dir, candidate);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`${path.join(dir, name)}(.gz): no such file`);
}

// The framework's normalization, in float32 as LibTorch computes it:
// (x / 255 - 0.2860) / 0.3530.
function normalize(pixels) {
  const out = new Float32Array(pixels.length);
  const mean = Math.fround(0.2860);
  const std = Math.fround(0.3530);
  for (let i = 0; i < pixels.length; ++i) {
    out[i] = Math.fround(Math.fround(Math.fround(pixels[i] / 255) - mean) / std);
  }
  return out;
}

async function runModel(file, images, n, sampleSize, batch) {
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 2,
  });
  const logits = [];
  let classes = 0;
  for (let start = 0; start < n; start += batch) {
    const rows = Math.min(batch, n - start);
    const input = new ort.Tensor(
      'float32', images.subarray(start * sampleSize, (start + rows) * sampleSize),
      [rows, 1, 28, 28]);
    const result = await session.run({ input });
    const out = result.logits;
    classes = out.dims[1];
    logits.push(Float32Array.from(out.data));
  }
  const all = new Float32Array(n * classes);
  let offset = 0;
  for (const part of logits) {
    all.set(part, offset);
    offset += part.length;
  }
  return { logits: all, classes };
}

function argmax(logits, classes, i) {
  let best = 0;
  for (let c = 1; c < classes; ++c) {
    if (logits[i * classes + c] > logits[i * classes + best]) best = c;
  }
  return best;
}

async function main() {
  const args = parseArgs(process.argv);
  const images = readIdx(findIdx(args.data, 't10k-images-idx3-ubyte'));
  const labels = readIdx(findIdx(args.data, 't10k-labels-idx1-ubyte'));
  const n = labels.shape[0];
  const sampleSize = images.shape[1] * images.shape[2];
  const inputs = normalize(images.data.subarray(0, n * sampleSize));

  const cppPredictions = fs.readFileSync(path.join(args.qat_dir, 'int8_predictions.bin'));
  const fp32Raw = fs.readFileSync(path.join(args.qat_dir, 'fp32_logits.bin'));
  const torchLogits = new Float32Array(
    fp32Raw.buffer.slice(fp32Raw.byteOffset, fp32Raw.byteOffset + fp32Raw.length));
  if (cppPredictions.length !== n) {
    throw new Error(`int8_predictions.bin holds ${cppPredictions.length} samples, ` +
                    `the test set ${n}`);
  }

  const int8 = await runModel(path.join(args.qat_dir, 'student_int8.onnx'),
                              inputs, n, sampleSize, 500);
  const fp32 = await runModel(path.join(args.qat_dir, 'student_fp32.onnx'),
                              inputs, n, sampleSize, 500);
  if (torchLogits.length !== n * fp32.classes) {
    throw new Error(`fp32_logits.bin holds ${torchLogits.length} values, ` +
                    `expected ${n} x ${fp32.classes}`);
  }
  let int8Correct = 0, cppCorrect = 0, agree = 0, fp32Correct = 0, fp32Agree = 0;
  let maxAbsDiff = 0;
  for (let i = 0; i < n; ++i) {
    const label = labels.data[i];
    const ortInt8 = argmax(int8.logits, int8.classes, i);
    const ortFp32 = argmax(fp32.logits, fp32.classes, i);
    int8Correct += ortInt8 === label ? 1 : 0;
    cppCorrect += cppPredictions[i] === label ? 1 : 0;
    agree += ortInt8 === cppPredictions[i] ? 1 : 0;
    fp32Correct += ortFp32 === label ? 1 : 0;
    fp32Agree += ortFp32 === argmax(torchLogits, fp32.classes, i) ? 1 : 0;
  }
  for (let j = 0; j < torchLogits.length; ++j) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(torchLogits[j] - fp32.logits[j]));
  }
  console.log(JSON.stringify({
    samples: n,
    ort_version: require('onnxruntime-node/package.json').version,
    int8_ort_accuracy: int8Correct / n,
    int8_cpp_accuracy: cppCorrect / n,
    int8_argmax_agreement: agree / n,
    fp32_ort_accuracy: fp32Correct / n,
    fp32_argmax_agreement: fp32Agree / n,
    fp32_max_abs_logit_diff: maxAbsDiff,
  }));
}

main().catch((e) => {
  console.error(`ort_check: error: ${e.message}`);
  process.exit(2);
});
