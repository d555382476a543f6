"""The same distillation as `distill`, written as a plain PyTorch script.

This is what a user would otherwise run: one Python process, the teacher in
the same process, a hand-written training loop. It reproduces the framework's
job step for step so that its epoch times and accuracies can be compared:

* models: the zoo's cnn_teacher / cnn_student (student/zoo.cc): conv stages
  of Conv3x3 (no bias) -> BatchNorm -> ReLU, repeated, then 2x2 max pool; a
  Linear -> ReLU -> Dropout -> Linear head; built in the same order after
  torch.manual_seed(seed), so the initial weights are the framework's;
* data: Fashion-MNIST normalized as (x / 255 - 0.2860) / 0.3530
  (data/fashion_mnist.cc), the first `train_limit` samples;
* order: torch DistributedSampler's permutation, a generator seeded with
  seed + epoch (data/sampler.h), consecutive batches, the last one kept;
* augmentation: random crop with padding and horizontal flip drawn from one
  SplitMix64 stream per (seed, epoch, sample id) (data/augment.cc);
* loss: weight * T^2 KL(p_T || q_T) (kd_kl) + weight * cross entropy
  (hard_ce) with p_T = softmax(teacher / T) from the teacher in eval mode;
* SGD (momentum, Nesterov, weight decay) with linear warmup then cosine decay
  per step (trainer/lr_schedule.cc); test accuracy after every epoch.

It writes metrics.jsonl and summary.json in the framework's format (the
fields bench/ reads), including where each epoch's step time went.

usage: distill_reference.py --spec SPEC.json --run_dir DIR
       distill_reference.py --spec SPEC.json --dump_batches N --epoch E --out DIR
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.2860, 0.3530

ZOO_DEFAULTS = {
    "cnn_student": {"width": 16, "convs_per_stage": 1, "hidden": 48, "dropout": 0.1},
    "cnn_teacher": {"width": 32, "convs_per_stage": 1, "hidden": 320, "dropout": 0.3},
}


# ---------------------------------------------------------------- models

class ConvStage(nn.Module):
    def __init__(self, cin, cout, convs):
        super().__init__()
        self.count = convs
        for i in range(convs):
            # Registered conv, bn, conv, bn... as the zoo does: the order is
            # the order of the initial random draws.
            setattr(self, f"conv{i}", nn.Conv2d(cin if i == 0 else cout, cout, 3,
                                                padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))

    def forward(self, x):
        for i in range(self.count):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return F.max_pool2d(x, 2)


class Cnn(nn.Module):
    def __init__(self, width, convs_per_stage, hidden, dropout, classes=10):
        super().__init__()
        self.stage1 = ConvStage(1, width, convs_per_stage)
        self.stage2 = ConvStage(width, 2 * width, convs_per_stage)
        self.fc1 = nn.Linear(2 * width * 7 * 7, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = self.stage2(self.stage1(x)).flatten(1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


def build_model(model_spec):
    arch = model_spec["arch"]
    if arch not in ZOO_DEFAULTS:
        sys.exit(f"distill_reference: architecture '{arch}' is not in the reference "
                 f"(known: {', '.join(sorted(ZOO_DEFAULTS))})")
    opts = dict(ZOO_DEFAULTS[arch])
    for key, value in model_spec.get("options", {}).items():
        if key not in opts:
            sys.exit(f"distill_reference: model '{arch}' has no option '{key}'")
        opts[key] = value
    return Cnn(int(round(opts["width"])), int(round(opts["convs_per_stage"])),
               int(round(opts["hidden"])), float(opts["dropout"]))


def load_distill_weights(model, path):
    """Loads a `model.pt` written by `distill` (a torch::serialize archive)."""
    archive = torch.jit.load(path, map_location="cpu")
    stored = dict(archive.named_parameters())
    stored.update(dict(archive.named_buffers()))
    state = {}
    for name in model.state_dict():
        key = "model/" + name
        if key not in stored:
            sys.exit(f"distill_reference: {path} has no tensor '{name}'")
        state[name] = stored[key]
    model.load_state_dict(state)


# ---------------------------------------------------------------- data

def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir, train, limit):
    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    # The framework's float32 ops in its order: /255, -mean, /std.
    x = torch.from_numpy(images.copy()).to(torch.float32).div_(255.0)
    x = x.sub_(MEAN).div_(STD).unsqueeze(1)
    return x.contiguous(), torch.from_numpy(labels.astype(np.int64))


def epoch_order(n, seed, epoch):
    """DistributedSampler with one replica: randperm seeded with seed + epoch."""
    g = torch.Generator()
    g.manual_seed((seed + epoch) % (1 << 64))
    return torch.randperm(n, generator=g)


_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x):
    # SplitMix64's output function on uint64 arrays (wrapping arithmetic).
    x = x + _GOLDEN
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def augment_draws(ids, seed, epoch, pad, flip):
    """(top, left, flip) per sample id, as data/augment.cc draws them."""
    with np.errstate(over="ignore"):
        ids = np.asarray(ids, dtype=np.int64).astype(_U64)
        base = _mix64(np.array([seed % (1 << 64)], dtype=_U64))
        base = _mix64(base ^ _U64(epoch % (1 << 64)))
        state = _mix64(base ^ ids)
        draws = []
        for _ in range(3):
            state = state + _GOLDEN
            draws.append(_mix64(state))
    span = _U64(2 * pad + 1)
    top = (draws[0] % span).astype(np.int64)
    left = (draws[1] % span).astype(np.int64)
    flips = (draws[2] >> _U64(63)).astype(bool) if flip else np.zeros(len(ids), bool)
    return top, left, flips


def augment(x, ids, seed, epoch, aug):
    pad = int(aug.get("crop_padding", 2))
    flip = bool(aug.get("horizontal_flip", True))
    if not aug.get("enabled", False) or (pad == 0 and not flip):
        return x
    top, left, flips = augment_draws(ids, seed, epoch, pad, flip)
    n, _, h, w = x.shape
    # The background value in float32 arithmetic, as the framework computes it.
    background = float(np.float32(np.float32(-np.float32(MEAN)) / np.float32(STD)))
    padded = F.pad(x, (pad, pad, pad, pad), value=background) if pad else x
    # Gather every crop at once: rows top..top+h, columns left..left+w, and
    # the columns reversed where the sample is flipped.
    rows = torch.from_numpy(top)[:, None] + torch.arange(h)[None, :]
    cols = torch.from_numpy(left)[:, None] + torch.arange(w)[None, :]
    cols = torch.where(torch.from_numpy(flips)[:, None], cols.flip(1), cols)
    batch = torch.arange(n)[:, None, None]
    out = padded[:, 0][batch, rows[:, :, None], cols[:, None, :]]
    return out.unsqueeze(1).contiguous()


def batches(x, y, order, batch_size, seed, epoch, aug):
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        yield ids, augment(x.index_select(0, ids), ids.numpy(), seed, epoch, aug), \
            y.index_select(0, ids)


# ---------------------------------------------------------------- training

def learning_rate(spec, step, total_steps):
    opt, sched = spec["optimizer"], spec["lr_schedule"]
    base, warmup = opt["lr"], sched.get("warmup_steps", 0)
    if step < warmup:
        return base * (step + 1) / warmup
    if sched.get("type", "COSINE") == "COSINE":
        min_lr = sched.get("min_lr", 0.0)
        progress = min(max((step - warmup) / max(total_steps - warmup, 1), 0.0), 1.0)
        return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))
    return base


def loss_terms(spec, logits, teacher_probs, labels):
    temperature = spec.get("temperature", 4.0)
    terms = {}
    for term in spec["loss"]:
        name = term["name"]
        if name == "hard_ce":
            smoothing = term.get("params", {}).get("label_smoothing", 0.0)
            terms[name] = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        elif name == "kd_kl":
            log_q = F.log_softmax(logits / temperature, -1)
            kl = (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_q).sum(-1)
            terms[name] = temperature ** 2 * kl.mean()
        else:
            sys.exit(f"distill_reference: loss '{name}' is not in the reference")
    total = sum(term.get("weight", 1.0) * terms[term["name"]] for term in spec["loss"])
    return total, {k: v.item() for k, v in terms.items()}


def evaluate(model, x, y):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(y), 512):
            logits = model(x[start:start + 512])
            loss += F.cross_entropy(logits, y[start:start + 512], reduction="sum").item()
            correct += (logits.argmax(1) == y[start:start + 512]).sum().item()
    model.train()
    return correct / len(y), loss / len(y)


def train(spec, run_dir):
    torch.set_num_threads(spec["threads"])
    seed = spec["seed"]
    torch.manual_seed(seed)
    data = spec["data"]
    x_train, y_train = load_split(data["dir"], True, data.get("train_limit", 0))
    x_test, y_test = load_split(data["dir"], False, data.get("test_limit", 0))
    # Built in the framework's order (student, then teacher), so the global
    # generator is in the same state when dropout draws its first mask.
    model = build_model(spec["student"])
    # The teacher, and the members of an ensemble after it, in the
    # framework's order.
    teachers = []
    if spec.get("teacher"):
        for member in [spec["teacher"]] + spec["teacher"].get("ensemble", []):
            teacher = build_model(member)
            load_distill_weights(teacher, member["weights"])
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            teachers.append(teacher)
    opt = spec["optimizer"]
    optimizer = torch.optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                                nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
    temperature = spec.get("temperature", 4.0)
    batch_size, epochs = spec["batch_size"], spec["epochs"]
    n = len(y_train)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total_steps = steps_per_epoch * epochs
    log_every = spec.get("log_every_steps", 50)
    os.makedirs(run_dir, exist_ok=True)
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "w")
    step, train_seconds, acc, test_loss = 0, 0.0, 0.0, 0.0
    model.train()
    for epoch in range(epochs):
        order = epoch_order(n, seed, epoch)
        profile = dict.fromkeys(["data", "teacher", "forward", "backward", "sync",
                                 "optimizer"], 0.0)
        loss_sum, seen, term_sums = 0.0, 0, {}
        start = time.perf_counter()
        stream = batches(x_train, y_train, order, batch_size, seed, epoch, data["augment"])
        while True:
            t = time.perf_counter()
            item = next(stream, None)
            profile["data"] += time.perf_counter() - t
            if item is None:
                break
            _, inputs, labels = item
            lr = learning_rate(spec, step, total_steps)
            probs = None
            if teachers:
                t = time.perf_counter()
                with torch.no_grad():
                    # An ensemble's targets: the mean of its members' softmax.
                    probs = F.softmax(teachers[0](inputs) / temperature, -1)
                    for teacher in teachers[1:]:
                        probs = probs + F.softmax(teacher(inputs) / temperature, -1)
                    if len(teachers) > 1:
                        probs = probs / len(teachers)
                profile["teacher"] += time.perf_counter() - t
            t = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            total, terms = loss_terms(spec, model(inputs), probs, labels)
            profile["forward"] += time.perf_counter() - t
            t = time.perf_counter()
            total.backward()
            profile["backward"] += time.perf_counter() - t
            t = time.perf_counter()
            optimizer.step()
            profile["optimizer"] += time.perf_counter() - t
            value, size = total.item(), len(labels)
            step += 1
            loss_sum += value * size
            seen += size
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + v * size
            if step % log_every == 0 or seen == n:
                metrics.write(json.dumps({"type": "train", "epoch": epoch + 1, "step": step,
                                          "loss": value, "lr": lr, "terms": terms}) + "\n")
        seconds = time.perf_counter() - start
        train_seconds += seconds
        acc, test_loss = evaluate(model, x_test, y_test)
        metrics.write(json.dumps({
            "type": "epoch", "epoch": epoch + 1, "step": step,
            "train_loss": loss_sum / max(seen, 1),
            "terms": {k: v / max(seen, 1) for k, v in term_sums.items()},
            "epoch_seconds": seconds, "profile_seconds": profile,
            "samples_per_sec": seen / max(seconds, 1e-9),
            "test_accuracy": acc, "test_loss": test_loss}) + "\n")
        metrics.flush()
    metrics.close()
    summary = {"name": spec.get("name", "reference"), "test_accuracy": acc,
               "test_loss": test_loss, "steps": step, "epochs": epochs,
               "params": sum(p.numel() for p in model.parameters()),
               "train_seconds": train_seconds, "seed": seed,
               "samples_per_sec": n * epochs / max(train_seconds, 1e-9)}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def dump_batches(spec, count, epoch, out_dir):
    """Writes the ids and augmented inputs of the first `count` batches."""
    data = spec["data"]
    x, y = load_split(data["dir"], True, data.get("train_limit", 0))
    order = epoch_order(len(y), spec["seed"], epoch)
    os.makedirs(out_dir, exist_ok=True)
    ids, tensors = [], []
    for i, (batch_ids, inputs, _) in enumerate(
            batches(x, y, order, spec["batch_size"], spec["seed"], epoch, data["augment"])):
        if i == count:
            break
        ids.append(batch_ids.tolist())
        tensors.append(inputs.numpy().astype(np.float32))
    with open(os.path.join(out_dir, "ids.json"), "w") as f:
        json.dump(ids, f)
    np.concatenate(tensors).tofile(os.path.join(out_dir, "inputs.f32"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="job spec (JSON) written by bench/")
    parser.add_argument("--run_dir", help="where metrics.jsonl and summary.json go")
    parser.add_argument("--dump_batches", type=int, default=0,
                        help="only write the first N batches of --epoch to --out")
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    if args.dump_batches > 0:
        dump_batches(spec, args.dump_batches, args.epoch, args.out)
        return
    if not args.run_dir:
        sys.exit("distill_reference: --run_dir is required")
    summary = train(spec, args.run_dir)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
