"""bench/reference/lm_reference.py is the framework's language model.

The speed comparison of bench/lm_bench.sh means something only if the
PyTorch reference computes what `distill` computes. So: `distill` trains a
small zoo gpt on real text (the licence texts of every Debian system) and
reports its test perplexity; the reference's Gpt loads that model.pt by
parameter name, cuts the test split into windows with its own code and must
reach the same perplexity over the same number of tokens. Then the
reference's training loop runs a few steps of the same shape and must count
the same parameters.

Exit 77 (skipped) when /usr/bin/python3 has no torch.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("skipped: python3 has no torch")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "testdata"))
import lm_reference  # noqa: E402
from distill_runs import prepare_licence_tokens  # noqa: E402

VOCAB, SEQ = 300, 32
DIMS = {"layers": 2, "heads": 2, "d_model": 32, "d_ff": 64}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build_dir", required=True)
    a = p.parse_args()
    bin_dir = os.path.join(a.build_dir, "bin")
    work = tempfile.mkdtemp(prefix="distill_lmref_")
    data = prepare_licence_tokens(os.path.join(bin_dir, "distill_prepare_text"), work, VOCAB)

    options = "".join(f'options {{ key: "{k}" value: {v} }} ' for k, v in DIMS.items())
    run_dir = os.path.join(work, "run")
    config = os.path.join(work, "gpt.pbtxt")
    with open(config, "w") as f:
        f.write(f'mode: TRAIN\nrun_dir: "{run_dir}"\n'
                f'data {{ dataset: "tokens" dir: "{data}" seq_len: {SEQ} }}\n'
                f'student {{ arch: "gpt" {options}options {{ key: "context" value: {SEQ} }} }}\n'
                "batch_size: 16 threads: 1 seed: 3 epochs: 1\n"
                "optimizer { type: ADAMW lr: 0.003 }\n")
    proc = subprocess.run([os.path.join(bin_dir, "distill"), "--quiet", "--config", config],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"distill failed ({proc.returncode}): {proc.stderr}")
    summary = json.load(open(os.path.join(run_dir, "summary.json")))

    model = lm_reference.Gpt(VOCAB, SEQ, DIMS["layers"], DIMS["heads"], DIMS["d_model"],
                             DIMS["d_ff"]).eval()
    lm_reference.load_distill_weights(model, os.path.join(run_dir, "model.pt"))
    tokens, vocab = lm_reference.read_tokens(os.path.join(data, "test.tok"))
    if vocab != VOCAB:
        sys.exit(f"the reference read a vocabulary of {vocab}, not {VOCAB}")
    windows = (len(tokens) - 2) // SEQ + 1
    inputs, labels = lm_reference.window_batch(tokens, torch.arange(windows), SEQ)
    with torch.no_grad():
        logits = model(inputs)
    nll = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="sum")
    count = int((labels != -100).sum())
    ppl = math.exp(nll.item() / count)
    print(f"distill test perplexity {summary['test_perplexity']:.5f} over "
          f"{summary['test_tokens']} tokens; reference {ppl:.5f} over {count}")
    if count != summary["test_tokens"]:
        sys.exit("the reference's windows hold a different number of test tokens")
    if abs(ppl - summary["test_perplexity"]) > 1e-4 * ppl:
        sys.exit("the reference's model computes a different perplexity")
    if not ppl < VOCAB / 3:
        sys.exit(f"the model did not learn (perplexity {ppl}): the check is too weak")

    cmd = [sys.executable, os.path.join(HERE, "reference", "lm_reference.py"),
           "--data", data, "--seq_len", str(SEQ), "--steps", "3", "--warmup_steps", "1",
           "--threads", "1", "--teacher", "optimized"]
    for k, v in DIMS.items():
        cmd += [f"--{k}", str(v), f"--teacher_{k}", str(v)]
    cmd += ["--teacher_weights", os.path.join(run_dir, "model.pt")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"reference training: {result}")
    if result["params"] != summary["params"]:
        sys.exit(f"the reference's student has {result['params']} parameters, "
                 f"distill's {summary['params']}")
    if not (result["tokens_per_sec"] > 0 and math.isfinite(result["last_loss"])):
        sys.exit("the reference's training steps produced no rate or a non-finite loss")
    shutil.rmtree(work)
    print("ok")


if __name__ == "__main__":
    main()
