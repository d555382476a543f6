"""Trainer step time with the teacher in process, behind a teacher_server and
read from an offline target store, one command: bash bench/target_store.sh.

The job is the language-model quickstart's distillation
(launch/configs/lm_student_distill.pbtxt: a 2-layer gpt student, a 4-layer
teacher, V = 8,192, windows of 128 tokens, batch 16) on the first --windows
training windows, one epoch, four ways:

1. the teacher in the trainer's process (dense targets, as the config says);
2. one teacher_server on loopback, TOP_K_PACKED k = 128, then HIDDEN_FP16
   (the teacher's hidden states, the trainer applying its head);
3. a target store of the same encoding written once by
   `distill --write_target_store` (its write time and bytes reported), then
   read by a run that names no model and no server;
4. a DENSE_LOGP_FP16 store (exact-to-fp16 dense targets) read the same way.

For each: seconds per step, tokens/s, and the fraction of the epoch the
loop spent getting targets (the teacher's forward in process, or waiting
for answers not ready yet: `profile_seconds.teacher / epoch_seconds`,
metrics.jsonl). Then the student's test perplexity when distilled through
stores of each sparse encoding, and through the server with hidden states,
against dense targets in process, on --quality_windows windows. The teacher is runs/lm/teacher/model.pt when the
quickstart made one, else lm_teacher.pbtxt trained here for
--teacher_epochs epochs. Run folders go under --out.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import lm_setup

REPO = lm_setup.REPO
BIN = lm_setup.BIN
DATA = lm_setup.DATA
# HIDDEN_FP16 on the wire: 2 bytes for each of the teacher's d_model states.
HIDDEN_BYTES_PER_TOKEN = 2 * 256


def log(msg):
    print(f"[target_store {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd):
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"target_store: {' '.join(cmd)} failed ({proc.returncode}):\n"
                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def block_end(text, start):
    """The index just past the `}` closing the first `{` at or after start."""
    depth, i = 0, text.index("{", start)
    while True:
        depth += text[i] == "{"
        depth -= text[i] == "}"
        i += 1
        if depth == 0:
            return i


def config(name, out, windows, teacher_weights, teacher=None, mode_text=None):
    """lm_student_distill (or `mode_text`) on `windows` windows in out/name,
    with `teacher` replacing its teacher section's body when given."""
    path = os.path.join(REPO, "launch", "configs",
                        "lm_student_distill.pbtxt" if mode_text is None else mode_text)
    text = open(path).read()
    text = re.sub(r'run_dir: "[^"]*"', f'run_dir: "{os.path.join(out, name)}"', text)
    text = re.sub(r'weights: "[^"]*"', f'weights: "{teacher_weights}"', text)
    text = text.replace('seq_len: 128 }', f'seq_len: 128 train_limit: {windows} }}')
    text = re.sub(r"\nlog_every_steps: \d+", "\nlog_every_steps: 1000", text)
    if teacher is not None:
        start = text.index("teacher {")
        text = text[:start] + "teacher { " + teacher + " }" + text[block_end(text, start):]
    file = os.path.join(out, name + ".pbtxt")
    with open(file, "w") as f:
        f.write(text)
    return file, text


def teacher_model_section(text):
    start = text.index("model {", text.index("teacher {"))
    return text[start:block_end(text, start)]


def epoch_figures(run_dir):
    epoch = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))
             if '"type":"epoch"' in line.replace(" ", "")][-1]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    steps = epoch["step"]
    return {"seconds_per_step": epoch["epoch_seconds"] / steps,
            "tokens_per_sec": summary.get("tokens_per_sec", 0),
            # Time the loop spent on targets: an in-process teacher's forward
            # (inside Submit) and waits for answers not ready yet.
            "wait_fraction": epoch["profile_seconds"]["teacher"] / epoch["epoch_seconds"],
            "epoch_seconds": epoch["epoch_seconds"], "steps": steps,
            "test_perplexity": summary.get("test_perplexity")}


def train(file):
    run([os.path.join(BIN, "distill"), "--quiet", "--config", file])


def write_store(file):
    start = time.time()
    run([os.path.join(BIN, "distill"), "--quiet", "--config", file,
         "--write_target_store"])
    return time.time() - start


def measure(args, rows, weights, model, port):
    """Step times through the server and from stores, and the quality runs.
    Returns the store writes and the quality rows."""
    for name, encoding in (("packed", "encoding: TOP_K_PACKED top_k: 128"),
                           ("hidden", "encoding: HIDDEN_FP16")):
        log(f"step time: one teacher_server, {encoding}")
        file, _ = config(f"remote-{name}", args.out, args.windows, weights,
                         f'endpoints: "127.0.0.1:{port}" {encoding}')
        train(file)
        rows[f"teacher_server, {encoding.replace('encoding: ', '')}"] = epoch_figures(
            os.path.join(args.out, f"remote-{name}"))

    writes = {}
    for name, encoding, label in (
            ("packed", "encoding: TOP_K_PACKED top_k: 128", "store, TOP_K_PACKED k=128"),
            ("logp", "encoding: DENSE_LOGP_FP16", "store, DENSE_LOGP_FP16")):
        store = os.path.join(args.out, name + ".store")
        log(f"step time: writing and reading the {name} store")
        file, _ = config(f"write-{name}", args.out, args.windows, weights,
                         f'{model} store_dir: "{store}" {encoding}')
        seconds = write_store(file)
        index = json.load(open(os.path.join(store, "store.json")))
        writes[label] = {"seconds": seconds, "bytes_per_token": index["bytes_per_token"],
                         "total_bytes": index["total_bytes"]}
        file, _ = config(f"store-{name}", args.out, args.windows, weights,
                         f'store_dir: "{store}" {encoding}')
        train(file)
        rows[label] = epoch_figures(os.path.join(args.out, f"store-{name}"))
        shutil.rmtree(store)

    quality = {}
    if args.quality_windows:
        n = args.quality_windows
        log(f"quality: hard labels and dense in process on {n} windows")
        file, _ = config("q-hard", args.out, n, weights, mode_text="lm_student_hard.pbtxt")
        train(file)
        quality["hard labels only"] = (epoch_figures(os.path.join(args.out, "q-hard")), None)
        file, _ = config("q-dense", args.out, n, weights)
        train(file)
        quality["in process, dense fp32"] = (epoch_figures(os.path.join(args.out, "q-dense")),
                                             None)
        for name, encoding in (("packed128", "encoding: TOP_K_PACKED top_k: 128"),
                               ("topk32", "encoding: TOP_K top_k: 32"),
                               ("topk8", "encoding: TOP_K top_k: 8"),
                               ("sampled32", "encoding: SAMPLED samples: 32")):
            store = os.path.join(args.out, f"q-{name}.store")
            log(f"quality: the {name} store")
            file, _ = config(f"q-write-{name}", args.out, n, weights,
                             f'{model} store_dir: "{store}" {encoding}')
            write_store(file)
            bytes_per_token = json.load(open(os.path.join(store, "store.json")))[
                "bytes_per_token"]
            file, _ = config(f"q-{name}", args.out, n, weights,
                             f'store_dir: "{store}" {encoding}')
            train(file)
            quality[f"store, {encoding.replace('encoding: ', '')}"] = (
                epoch_figures(os.path.join(args.out, f"q-{name}")), bytes_per_token)
            shutil.rmtree(store)

        log("quality: hidden states through the teacher_server")
        file, _ = config("q-hidden", args.out, n, weights,
                         f'endpoints: "127.0.0.1:{port}" encoding: HIDDEN_FP16')
        train(file)
        quality["teacher_server, HIDDEN_FP16"] = (
            epoch_figures(os.path.join(args.out, "q-hidden")), HIDDEN_BYTES_PER_TOKEN)
    return writes, quality


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=512,
                   help="training windows of the step-time runs")
    p.add_argument("--quality_windows", type=int, default=2048,
                   help="training windows of the perplexity-by-encoding runs (0: skip)")
    p.add_argument("--teacher_epochs", type=int, default=1)
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench_store"))
    args = p.parse_args()
    if args.windows < 16 or args.teacher_epochs < 1 or args.quality_windows < 0:
        p.error("--windows must be >= 16, --teacher_epochs >= 1, --quality_windows >= 0")
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    weights = lm_setup.data_and_teacher(args.out, args.teacher_epochs, run, train, log)
    teacher_ppl = json.load(open(os.path.join(os.path.dirname(weights), "summary.json")))[
        "test_perplexity"]

    rows = {}
    log("step time: teacher in process")
    file, text = config("inprocess", args.out, args.windows, weights)
    train(file)
    rows["in process (dense fp32)"] = epoch_figures(os.path.join(args.out, "inprocess"))
    model = teacher_model_section(text)

    log("starting one teacher_server")
    with lm_setup.teacher_server(weights, os.path.join(args.out, "server.port")) as port:
        writes, quality = measure(args, rows, weights, model, port)

    base = rows["in process (dense fp32)"]["seconds_per_step"]
    flags = "".join(f" --{k} {v}" for k, v, d in (
        ("windows", args.windows, 512), ("quality_windows", args.quality_windows, 2048),
        ("teacher_epochs", args.teacher_epochs, 1)) if v != d)
    print(f"Command: `bash bench/target_store.sh{flags}` ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores). The language-model quickstart's distillation "
          f"(V = 8,192, windows of 128 tokens, batch 16, 2-layer student, 4-layer "
          f"teacher of test perplexity {teacher_ppl:.2f}), one epoch.")
    print()
    print(f"Step time by where the targets come from ({args.windows} windows):")
    print()
    print("| teacher | s/step | vs in process | tokens/s | step time spent getting targets |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds_per_step']:.3f} | "
              f"{r['seconds_per_step'] / base:.2f}x | {r['tokens_per_sec']:,.0f} | "
              f"{100 * r['wait_fraction']:.1f}% |")
    print()
    for name, w in writes.items():
        print(f"- {name}: {w['bytes_per_token']:,} bytes/token, "
              f"{w['total_bytes'] / 1e6:,.1f} MB, written in {w['seconds']:.1f} s "
              f"(one teacher forward over every window)")
    if quality:
        ref = quality["in process, dense fp32"][0]["test_perplexity"]
        print()
        print(f"Student test perplexity by encoding, same budget "
              f"({args.quality_windows} windows, seed 1):")
        print()
        print("| targets | bytes/token | test ppl | vs dense in process |")
        print("|---|---:|---:|---:|")
        for name, (r, b) in quality.items():
            print(f"| {name} | {'' if b is None else f'{b:,}'} | "
                  f"{r['test_perplexity']:.2f} | "
                  f"{100 * (r['test_perplexity'] / ref - 1):+.1f}% |")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "writes": writes,
                   "quality": {k: v[0] for k, v in quality.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
