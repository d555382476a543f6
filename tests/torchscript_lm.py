"""TorchScript language models in `distill`, checked from Python PyTorch.

1. `distill_prepare_text` tokenizes real text (the licence texts of every
   Debian system).
2. Python scripts a small nanoGPT-style causal LM and saves it.
3. `distill` trains it as a student and saves it back; Python reads the test
   token file itself and computes the trained model's test perplexity, which
   must equal the one `distill` reported.
4. `distill` distills a zoo gpt from the trained TorchScript LM as teacher.

Exit 77 (skipped) when /usr/bin/python3 has no torch.
"""
import argparse
import math
import os
import shutil
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("skipped: python3 has no torch/numpy")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "testdata"))
from distill_runs import prepare_licence_tokens, run  # noqa: E402

VOCAB, SEQ = 300, 32


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        n, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.view(n, s, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(n, s, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(n, s, self.heads, d // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(n, s, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyLm(nn.Module):
    def __init__(self, vocab=VOCAB, d=32, heads=2, layers=2, context=SEQ):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        pos = torch.arange(tokens.size(1), device=tokens.device)
        x = self.wte(tokens) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def read_tokens(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"DTOKENS1", path
    width = int.from_bytes(data[12:16], "little")
    count = int.from_bytes(data[24:32], "little")
    dtype = np.uint16 if width == 2 else np.uint32
    return np.frombuffer(data, dtype=dtype, offset=64, count=count).astype(np.int64)


def perplexity(model, ids):
    """Windows of SEQ + 1 tokens at stride SEQ; the last one padded with -100."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, SEQ):
            window = ids[start:start + SEQ + 1]
            inputs = np.zeros(SEQ, dtype=np.int64)
            labels = np.full(SEQ, -100, dtype=np.int64)
            inputs[:len(window) - 1] = window[:-1]
            labels[:len(window) - 1] = window[1:]
            logits = model(torch.from_numpy(inputs)[None])[0]
            total += F.cross_entropy(logits, torch.from_numpy(labels),
                                     ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return math.exp(total / count), count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--distill", required=True)
    parser.add_argument("--prepare", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="distill_tslm_")
    data = prepare_licence_tokens(args.prepare, work, VOCAB)

    torch.manual_seed(0)
    scripted = torch.jit.script(TinyLm())
    initial = os.path.join(work, "tiny_lm.pt")
    scripted.save(initial)

    data_section = f'data {{ dataset: "tokens" dir: "{data}" seq_len: {SEQ} }}\n'
    common = ("batch_size: 16 threads: 1 seed: 2 epochs: 2\n"
              "optimizer { type: ADAMW lr: 0.003 }\n")
    student_run = os.path.join(work, "ts_student")
    summary = run(args.distill, f'mode: TRAIN\n{data_section}student {{ torchscript: "{initial}" }}\n'
                  + common, student_run, work)
    trained = torch.jit.load(os.path.join(student_run, "model.torchscript.pt"))
    trained.eval()
    ppl, count = perplexity(trained, read_tokens(os.path.join(data, "test.tok")))
    print(f"distill test perplexity {summary['test_perplexity']:.4f}, "
          f"Python {ppl:.4f} over {count} tokens")
    if count != summary["test_tokens"]:
        sys.exit(f"distill counted {summary['test_tokens']} test tokens, Python {count}")
    if abs(ppl - summary["test_perplexity"]) > 1e-3 * ppl:
        sys.exit("the perplexities differ")
    if not ppl < VOCAB / 4:
        sys.exit(f"the TorchScript student did not learn: perplexity {ppl}")

    teacher_run = os.path.join(work, "from_ts_teacher")
    gpt = ('student { arch: "gpt" options { key: "layers" value: 1 } '
           'options { key: "d_model" value: 32 } options { key: "heads" value: 2 } '
           f'options {{ key: "context" value: {SEQ} }} }}\n')
    summary = run(args.distill,
                  f"mode: DISTILL\n{data_section}{gpt}"
                  f'teacher {{ model {{ torchscript: "{os.path.join(student_run, "model.torchscript.pt")}" }} }}\n'
                  + common, teacher_run, work)
    agreement = summary.get("validation_teacher_agreement")
    print(f"distilled from the TorchScript teacher: test perplexity "
          f"{summary['test_perplexity']:.2f}, teacher agreement {agreement}")
    if agreement is None or not 0 < agreement <= 1:
        sys.exit(f"no teacher agreement in {summary}")
    shutil.rmtree(work)
    print("ok")


if __name__ == "__main__":
    main()
