"""The language-model job as a plain PyTorch script, for its step time.

What an expert would write with Debian's python3-torch (1.13, CPU) for the
job `distill` runs from launch/configs/lm_student_*.pbtxt:

* the zoo's gpt (student/gpt.cc): token + position embeddings, pre-LayerNorm
  blocks of causal multi-head attention and a GELU MLP, a final LayerNorm and
  an output head tied to the token embedding; the parameter names are the
  framework's, so its model.pt loads here;
* data: windows of S + 1 tokens at stride S from the same token file
  (data/token_windows.h), the last one's missing labels -100; order:
  randperm seeded with seed + epoch (data/sampler.h), consecutive batches;
* step: logits for the whole batch, cross entropy over the real tokens
  (nanoGPT's loop), for distillation plus 0.5 * T^2 KL(p_T || q_T) from a
  teacher run under torch.inference_mode(); AdamW, linear warmup then cosine,
  gradient clipping at 1.0;
* the teacher either as written ("plain") or traced, frozen and passed
  through torch.jit.optimize_for_inference ("optimized"), which moves its
  linear layers onto oneDNN.

It trains --steps steps and prints one JSON line: the mean step time and
tokens/s over the steps after --warmup_steps.

usage: lm_reference.py --data DIR --layers L --d_model D --d_ff F --heads H
           --seq_len S --batch_size N --steps K [--teacher_* ...]
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEADER = 64


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(d // heads)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        n, s, d = x.shape
        q, k, v = self.qkv(x).split(d, -1)
        shape = (n, s, self.heads, d // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * self.scale
        future = torch.ones(s, s, dtype=torch.bool).triu(1)
        att = torch.softmax(att.masked_fill(future, float("-inf")), -1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, s, d))


class Block(nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d_ff)
        self.proj = nn.Linear(d_ff, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab, context, layers, heads, d, d_ff):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, d_ff) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if "ln" in name:
                continue
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1])
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


def read_tokens(path):
    with open(path, "rb") as f:
        header = f.read(HEADER)
        if header[:8] != b"DTOKENS1":
            sys.exit(f"lm_reference: {path} is not a token file")
        width, vocab = struct.unpack("<II", header[12:20])
        (count,) = struct.unpack("<Q", header[24:32])
        ids = np.fromfile(f, dtype=np.uint16 if width == 2 else np.uint32)
    if len(ids) != count:
        sys.exit(f"lm_reference: {path} holds {len(ids)} ids, its header says {count}")
    return torch.from_numpy(ids.astype(np.int64)), vocab


def window_batch(tokens, ids, seq_len):
    inputs = torch.zeros(len(ids), seq_len, dtype=torch.long)
    labels = torch.full((len(ids), seq_len), -100, dtype=torch.long)
    for row, i in enumerate(ids.tolist()):
        piece = tokens[i * seq_len:i * seq_len + seq_len + 1]
        inputs[row, :len(piece) - 1] = piece[:-1]
        labels[row, :len(piece) - 1] = piece[1:]
    return inputs, labels


def load_distill_weights(model, path):
    """Loads a `model.pt` written by `distill` (a torch::serialize archive)."""
    stored = dict(torch.jit.load(path, map_location="cpu").named_parameters())
    state = {}
    for name in model.state_dict():
        if "model/" + name not in stored:
            sys.exit(f"lm_reference: {path} has no tensor '{name}'")
        state[name] = stored["model/" + name]
    model.load_state_dict(state)


def add_gpt_args(parser, prefix=""):
    """The zoo gpt's shape options (the quickstart student's by default) and
    the job's window and batch."""
    parser.add_argument(f"--{prefix}layers", type=int, default=2)
    parser.add_argument(f"--{prefix}heads", type=int, default=4)
    parser.add_argument(f"--{prefix}d_model", type=int, default=128)
    parser.add_argument(f"--{prefix}d_ff", type=int, default=512)
    if not prefix:
        parser.add_argument("--seq_len", type=int, default=128)
        parser.add_argument("--batch_size", type=int, default=16)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    add_gpt_args(p)
    add_gpt_args(p, "teacher_")
    p.add_argument("--teacher", choices=("none", "plain", "optimized"), default="none")
    p.add_argument("--teacher_weights", default="")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup_steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tokens, vocab = read_tokens(os.path.join(a.data, "train.tok"))
    windows = (len(tokens) - 2) // a.seq_len + 1
    student = Gpt(vocab, a.seq_len, a.layers, a.heads, a.d_model, a.d_ff)
    teacher = None
    if a.teacher != "none":
        teacher = Gpt(vocab, a.seq_len, a.teacher_layers, a.teacher_heads,
                      a.teacher_d_model, a.teacher_d_ff).eval()
        if a.teacher_weights:
            load_distill_weights(teacher, a.teacher_weights)
        if a.teacher == "optimized":
            example = torch.zeros(a.batch_size, a.seq_len, dtype=torch.long)
            with torch.no_grad():
                traced = torch.jit.trace(teacher, example)
            teacher = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    # The framework's optimizer: AdamW with weight decay 0.01 on every tensor.
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, weight_decay=0.01)
    g = torch.Generator()
    g.manual_seed(a.seed)
    order = torch.randperm(windows, generator=g)
    total_steps = math.ceil(windows / a.batch_size)
    times = []
    for step in range(a.steps):
        ids = order[(step * a.batch_size) % windows:][:a.batch_size]
        start = time.perf_counter()
        inputs, labels = window_batch(tokens, ids, a.seq_len)
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            lr = 0.5 * a.lr * (1 + math.cos(math.pi * (step - a.warmup) / (total_steps - a.warmup)))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = student(inputs).view(-1, vocab)
        flat = labels.view(-1)
        loss = F.cross_entropy(logits, flat)
        if teacher is not None:
            with torch.inference_mode():
                t_probs = torch.softmax(teacher(inputs).view(-1, vocab) / a.temperature, -1)
            t_probs = t_probs.clone()
            log_q = F.log_softmax(logits / a.temperature, -1)
            kl = (torch.xlogy(t_probs, t_probs) - t_probs * log_q).sum(-1)
            real = flat != -100
            loss = 0.5 * loss + 0.5 * a.temperature ** 2 * kl[real].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - start)
    timed = times[a.warmup_steps:]
    step_s = sum(timed) / len(timed)
    print(json.dumps({"steps_timed": len(timed), "step_seconds": step_s,
                      "tokens_per_sec": a.batch_size * a.seq_len / step_s,
                      "last_loss": loss.item(),
                      "params": sum(q.numel() for q in student.parameters())}))


if __name__ == "__main__":
    main()
