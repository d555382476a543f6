// Greedy generation through an exported language model in ONNX Runtime
// (CPU), without a KV cache: each step runs the whole prefix, right-padded
// with token 0 to the model's fixed sequence length (the model is causal,
// so the padding never changes the logits of the positions before it), and
// appends the most likely next token.
//   node greedy.js --model M.onnx --length S --prompt 3,17,40 --steps N
// S is the model's fixed sequence length. Prints one JSON line:
// {"tokens": [prompt..., generated...]}; stops early when the sequence
// fills S. Exits 2 on bad arguments.
'use strict';

const ort = require('onnxruntime-node');
const {parseArgs} = require('./args');

async function main() {
  let args;
  try {
    args = parseArgs(process.argv, ['model', 'prompt', 'steps', 'length'],
                     '--model M --length S --prompt T0,T1 --steps N');
  } catch (e) {
    console.error(`greedy: ${e.message}`);
    process.exit(2);
  }
  const tokens = args.prompt.split(',').map(Number);
  const steps = Number(args.steps);
  const length = Number(args.length);
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
  });
  const input = session.inputNames[0];
  for (let step = 0; step < steps && tokens.length < length; ++step) {
    const ids = new BigInt64Array(length).fill(0n);
    tokens.forEach((t, i) => { ids[i] = BigInt(t); });
    const out = await session.run({[input]: new ort.Tensor('int64', ids,
                                                           [1, length])});
    const logits = out[session.outputNames[0]];
    const vocab = logits.dims[2];
    const at = (tokens.length - 1) * vocab;
    let best = 0;
    for (let v = 1; v < vocab; ++v) {
      if (logits.data[at + v] > logits.data[at + best]) best = v;
    }
    tokens.push(best);
  }
  console.log(JSON.stringify({tokens}));
}

main().catch((e) => {
  console.error(`greedy: ${e.message}`);
  process.exit(1);
});
