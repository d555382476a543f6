#!/usr/bin/python3
"""Test perplexity of the QAT stage's language-model ONNX exports, computed
by ONNX Runtime (tests/onnx/run_model.js, npm's onnxruntime-node) over a
token file's windows, side by side with the perplexity the stage reported
for the same form:

  /usr/bin/python3 bench/lm_onnx_perplexity.py \\
      --qat_dir runs/lm/student_qat/qat --tokens runs/lm/data/test.tok \\
      --seq_len 128

Windows as the trainer makes them: stride seq_len, each position predicting
the next token, the last window right-padded with 0 (never scored). The
token file is read from its documented layout (data/token_file.h), not
through the framework. Runs the model over 16 windows at a time.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_ids(path):
    with open(path, 'rb') as f:
        data = f.read()
    width, = struct.unpack_from('<I', data, 12)
    count, = struct.unpack_from('<Q', data, 24)
    dtype = {2: '<u2', 4: '<u4'}[width]
    return np.frombuffer(data, dtype=dtype, count=count, offset=64).astype(
        np.int64)


def perplexity(model, ids, seq_len, chunk, tmp):
    count = len(ids)
    windows = (count - 2) // seq_len + 1
    inputs = np.zeros(windows * seq_len, dtype=np.int64)
    inputs[:count - 1] = ids[:count - 1]
    labels = np.full(windows * seq_len, -1, dtype=np.int64)
    labels[:count - 1] = ids[1:]
    inputs = inputs.reshape(windows, seq_len)
    labels = labels.reshape(windows, seq_len)
    nll, scored = 0.0, 0
    for start in range(0, windows, chunk):
        rows = inputs[start:start + chunk]
        x, y = os.path.join(tmp, 'x.bin'), os.path.join(tmp, 'y.bin')
        rows.tofile(x)
        subprocess.run(['node', os.path.join(ROOT, 'tests/onnx/run_model.js'),
                        '--dtype', 'int64', '--model', model, '--input', x,
                        '--shape', f'{len(rows)},{seq_len}', '--output', y],
                       check=True, stdout=subprocess.DEVNULL)
        logits = np.fromfile(y, dtype=np.float32).reshape(
            len(rows) * seq_len, -1).astype(np.float64)
        lab = labels[start:start + chunk].reshape(-1)
        keep = lab >= 0
        logits, lab = logits[keep], lab[keep]
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        nll += float((lse - logits[np.arange(len(lab)), lab]).sum())
        scored += len(lab)
    return float(np.exp(nll / scored))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--qat_dir', required=True)
    parser.add_argument('--tokens', required=True)
    parser.add_argument('--seq_len', type=int, required=True)
    parser.add_argument('--chunk', type=int, default=16)
    args = parser.parse_args()
    with open(os.path.join(args.qat_dir, 'quantization_report.json')) as f:
        report = json.load(f)
    ids = read_ids(args.tokens)
    print(f"{'form':10} {'ONNX file':18} {'stage ppl':>10} {'ORT ppl':>10} "
          f"{'ORT/stage':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for row in report['rows']:
            if not row.get('onnx_file'):
                continue
            name = row['onnx_file']['name']
            ort = perplexity(os.path.join(args.qat_dir, name), ids,
                             args.seq_len, args.chunk, tmp)
            print(f"{row['name']:10} {name:18} {row['perplexity']:10.3f} "
                  f"{ort:10.3f} {ort / row['perplexity']:10.5f}")
            sys.stdout.flush()


if __name__ == '__main__':
    main()
