"""Where a language-model student's step goes, op by op.

A Python mirror of `distill`'s hard-label step for the quickstart student
(launch/configs/lm_student_hard.pbtxt): lm_reference.py's Gpt with every
linear layer on LibTorch's `mkldnn_linear` behind `to_mkldnn` / `to_dense`
as common/linear.cc runs it, the tied head and cross entropy in chunks of
--chunk tokens with their gradients taken chunk by chunk (as
losses/composite_head.cc does), gradient clipping and AdamW. It prints its
tokens/s (compare with `distill`'s progress line; run both with the heap
kept, e.g. MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824) and
torch.autograd.profiler's table of self CPU time. Random tokens: the cost of
a step does not depend on them.

usage: /usr/bin/python3 bench/reference/lm_profile.py [--chunk 512] [--steps 5]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_reference as R  # noqa: E402


def onednn_linear(x, weight, bias=None):
    shape = x.shape
    y = torch._C._nn.mkldnn_linear(x.reshape(-1, shape[-1]).contiguous().to_mkldnn(),
                                   weight, bias).to_dense()
    return y.view(*shape[:-1], weight.shape[0])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=8192)
    R.add_gpt_args(p)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    torch.nn.Linear.forward = lambda self, x: onednn_linear(x, self.weight, self.bias)
    model = R.Gpt(a.vocab, a.seq_len, a.layers, a.heads, a.d_model, a.d_ff)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    tokens = torch.randint(0, a.vocab, (a.batch_size, a.seq_len))
    labels = torch.randint(0, a.vocab, (a.batch_size * a.seq_len,))
    n = labels.numel()

    def step():
        x = model.wte(tokens) + model.wpe(torch.arange(a.seq_len))
        for block in model.blocks:
            x = block(x)
        hidden = model.ln_f(x)
        flat = hidden.detach().reshape(n, -1)
        head = model.wte.weight
        grad_hidden = torch.zeros_like(flat)
        grad_head = torch.zeros_like(head)
        for start in range(0, n, a.chunk):
            h = flat[start:start + a.chunk].detach().requires_grad_()
            w = head.detach().requires_grad_()
            z = onednn_linear(h, w)
            loss = F.cross_entropy(z, labels[start:start + a.chunk], reduction="sum") / n
            gh, gw = torch.autograd.grad(loss, [h, w])
            grad_hidden[start:start + a.chunk] += gh
            grad_head += gw
        hidden.backward(grad_hidden.view_as(hidden))
        head.grad += grad_head
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(2 * a.steps):
        step()
    seconds = (time.perf_counter() - start) / (2 * a.steps)
    print(f"step {seconds * 1e3:.1f} ms = {a.batch_size * a.seq_len / seconds:,.0f} tokens/s")
    with torch.autograd.profiler.profile() as prof:
        for _ in range(a.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
