"""On-policy reverse KL through a teacher_server, by what the server sends:
its whole distribution, its own top k, or its log-probabilities at the
student's own top k (on_policy.student_top_k), one command:
bash bench/on_policy_served.sh.

The job is bench/on_policy.py's (the language-model quickstart's
distillation, V = 8,192, windows of 128 tokens, batch 16), with every step
on-policy (fraction 1) and generalized_jsd at beta 1 (reverse KL), from the
same warm-started student per seed (off-policy KD on --warm_windows
windows), for one epoch over --windows windows: the same steps for every
row, so the rows differ only in the targets. The teacher is one
teacher_server on loopback answering

1. HIDDEN_FP16: the teacher's final hidden states; the trainer computes its
   whole distribution (exact reverse KL);
2. TOP_K k: the teacher's own k likeliest tokens and its tail mass (reverse
   KL over those k buckets and the tail);
3. TOP_K k with on_policy.student_top_k k: on-policy batches are answered
   INDEX_LOGP, the teacher's log-probabilities at the student's own k
   likeliest tokens of each position, and the tail mass of the rest.

For each: test perplexity, the teacher's NLL of the student's own
continuations of test text (the server asked at the sampled tokens), bytes
a position of one answer on the wire, the epoch's time split, mean and
standard deviation over --seeds.
"""
import argparse
import os
import shutil
import time

import lm_setup
import on_policy

REPO = lm_setup.REPO
BATCH = on_policy.BATCH


def served_config(out, name, seed, windows, weights, start, teacher):
    """on_policy.py's on-policy reverse-KL config (fraction 1) with the
    teacher section `teacher` (a teacher_server's settings)."""
    file = on_policy.config(out, name, seed, windows, weights, (1, 1), start)
    text = open(file).read()
    begin = text.index("teacher {")
    end = text.index("\n}\n", begin) + 3
    text = text[:begin] + f"teacher {{ {teacher} }}\n" + text[end:]
    with open(file, "w") as f:
        f.write(text)
    return file


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=1024,
                   help="training windows of every on-policy run")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--warm_windows", type=int, default=2048)
    p.add_argument("--top_k", type=int, default=16)
    p.add_argument("--teacher_epochs", type=int, default=1)
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench_on_policy_served"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.windows < BATCH or not seeds or args.warm_windows < BATCH or args.top_k < 1:
        p.error("--windows and --warm_windows must be >= 16, --seeds non-empty, --top_k >= 1")
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    log, run, train = on_policy.log, on_policy.run, on_policy.train
    weights = lm_setup.data_and_teacher(args.out, args.teacher_epochs, run, train, log)
    k = args.top_k
    hidden = 256  # the teacher's d_model (lm_setup.TEACHER_OPTIONS)
    kinds = [("HIDDEN_FP16 (whole distribution)", "encoding: HIDDEN_FP16", "", 2 * hidden),
             (f"TOP_K {k} (the teacher's top {k})", f"encoding: TOP_K top_k: {k}", "",
              6 * k + 4),
             (f"TOP_K {k} + student_top_k {k} (INDEX_LOGP)",
              f"encoding: TOP_K top_k: {k}", f"student_top_k: {k} ", 4 * k + 4)]
    results = {label: [] for label, _, _, _ in kinds}
    with lm_setup.teacher_server(weights, os.path.join(args.out, "server.port"),
                                 ["--max_queue_delay_us=0", f"--max_index_k={k}"]) as port:
        for seed in seeds:
            log(f"seed {seed}: the starting student, off-policy KD on {args.warm_windows} windows")
            train(on_policy.config(args.out, f"warm-s{seed}", seed, args.warm_windows, weights))
            start = os.path.join(args.out, f"warm-s{seed}", "model.pt")
            for i, (label, teacher, extra, _) in enumerate(kinds):
                name = f"k{i}-s{seed}"
                log(f"seed {seed}: {label}")
                file = served_config(args.out, name, seed, args.windows, weights, start,
                                     f'endpoints: "127.0.0.1:{port}" {teacher}')
                if extra:
                    text = open(file).read().replace("on_policy { ", "on_policy { " + extra)
                    with open(file, "w") as f:
                        f.write(text)
                train(file)
                results[label].append(on_policy.figures(os.path.join(args.out, name)))

    flags = "".join(f" --{n} {v}" for n, v, d in (
        ("windows", args.windows, 1024), ("seeds", args.seeds, "1,2,3"),
        ("warm_windows", args.warm_windows, 2048), ("top_k", args.top_k, 16)) if v != d)
    print(f"\nCommand: `bash bench/on_policy_served.sh{flags}` ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores). On-policy reverse KL (fraction 1, generalized_jsd "
          f"beta 1) through one teacher_server, {args.windows} windows from a student warm-"
          f"started on {args.warm_windows}; seeds {args.seeds}.\n")
    print(f"{'targets':<44} {'test ppl':>15} {'teacher NLL':>15} {'B/position':>10} "
          f"{'train s':>8} {'generate':>9} {'teacher':>8} {'step':>7}")
    for label, _, _, wire in kinds:
        rows = results[label]
        ppl, ppl_sd = on_policy.mean_sd([r["test_perplexity"] for r in rows])
        nll, nll_sd = on_policy.mean_sd([r["teacher_nll"] for r in rows])
        secs, _ = on_policy.mean_sd([r["train_seconds"] for r in rows])
        split = [on_policy.mean_sd([r[key] for r in rows])[0]
                 for key in ("generate", "teacher", "step")]
        print(f"{label:<44} {ppl:>8.2f} ± {ppl_sd:<4.2f} {nll:>8.3f} ± {nll_sd:<4.3f} "
              f"{wire:>10} {secs:>8.1f} {split[0]:>9.1f} {split[1]:>8.1f} {split[2]:>7.1f}")


if __name__ == "__main__":
    main()
