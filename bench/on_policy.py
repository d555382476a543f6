"""Off-policy KD against on-policy distillation at an equal wall-clock
budget, one command: bash bench/on_policy.sh.

The job is the language-model quickstart's distillation
(launch/configs/lm_student_distill.pbtxt: a 2-layer gpt student, the
4-layer teacher in process, V = 8,192, windows of 128 tokens, batch 16),
five ways. GKD distils students that are already trained on the data, so
every run starts from one student per seed: off-policy KD for one epoch
over the first --warm_windows training windows (0: every run starts from
fresh weights). Then, from it:

1. off-policy KD: the config's kd_kl 0.5 + hard_ce 0.5 on the data's text,
   one epoch over the first --windows training windows. Its training
   seconds are the budget.
2. on-policy with fraction (GKD's lambda) 0.5 and 1, each with
   generalized_jsd beta 0.5 and 1 (weight 0.5) + hard_ce 0.5 (hard_ce
   applies to the off-policy steps only). Prompts are the first 32 tokens
   of a window; the student samples the other 97 at temperature 1.

Equal budget: a run of each on-policy fraction first trains
--calibration_steps steps to measure its seconds per step; each on-policy
run then trains one epoch over as many windows as that
rate fits in the off-policy run's training seconds (its cosine schedule
ends there, as the off-policy run's does). The table gives the training
seconds each run actually took.

For each run: test perplexity, the teacher's NLL of the student's own
continuations of test text (summary.json test_teacher_nll_of_samples:
prompts of 32 tokens, 97 sampled at temperature 1; lower is text the
teacher finds likelier), the time split of its epoch (generate / teacher
/ step), mean and standard deviation over --seeds, and a sampled
continuation from each (seed of the first). The teacher is
runs/lm/teacher/model.pt when the quickstart made one, else
lm_teacher.pbtxt trained here for --teacher_epochs epochs.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import lm_setup

REPO = lm_setup.REPO
BIN = lm_setup.BIN
BATCH = 16
PROMPT = 32


def log(msg):
    print(f"[on_policy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd):
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"on_policy: {' '.join(cmd)} failed ({proc.returncode}):\n"
                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def config(out, name, seed, windows, weights, on_policy=None, start=None):
    """lm_student_distill on `windows` windows with `seed` in out/name; with
    on_policy = (fraction, beta) the generalized_jsd run; from the student
    weights `start` when given."""
    text = open(os.path.join(REPO, "launch", "configs", "lm_student_distill.pbtxt")).read()
    text = re.sub(r'run_dir: "[^"]*"', f'run_dir: "{os.path.join(out, name)}"', text)
    text = re.sub(r'weights: "[^"]*"', f'weights: "{weights}"', text)
    text = text.replace("seq_len: 128 }", f"seq_len: 128 train_limit: {windows} }}")
    text = re.sub(r"\nseed: \d+", f"\nseed: {seed}", text)
    text = re.sub(r"\nlog_every_steps: \d+", "\nlog_every_steps: 1000", text)
    if start is not None:
        student = text.index("student {")
        text = text[:student] + f'student {{ weights: "{start}"' + text[student + 9:]
    if on_policy is not None:
        fraction, beta = on_policy
        text = text.replace(
            'loss { name: "kd_kl" weight: 0.5 }',
            f'loss {{ name: "generalized_jsd" weight: 0.5 '
            f'params {{ key: "beta" value: {beta} }} }}')
        text += (f"on_policy {{ fraction: {fraction} prompt_tokens: {PROMPT} "
                 f"temperature: 1 }}\n")
    file = os.path.join(out, name + ".pbtxt")
    with open(file, "w") as f:
        f.write(text)
    return file


def train(file, extra=()):
    run([os.path.join(BIN, "distill"), "--quiet", "--config", file, *extra])


def figures(run_dir):
    epoch = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))
             if '"type":"epoch"' in line.replace(" ", "")][-1]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    profile = epoch["profile_seconds"]
    return {"test_perplexity": summary["test_perplexity"],
            "teacher_nll": summary.get("test_teacher_nll_of_samples"),
            "train_seconds": summary["train_seconds"], "steps": epoch["step"],
            "on_policy_steps": epoch.get("on_policy_steps", 0),
            "generate": profile.get("generate", 0.0), "teacher": profile["teacher"],
            "step": profile["forward"] + profile["backward"] + profile["optimizer"],
            "sample": (summary.get("samples") or [{}])[0]}


def seconds_per_step(out, name, seed, weights, on_policy, steps, start):
    """Seconds per training step of an on-policy run: the training seconds
    of a run of `steps` steps (its epoch's loop, without evaluation) over
    its steps."""
    file = config(out, name + "-calibrate", seed, steps * BATCH, weights, on_policy, start)
    train(file)
    f = figures(os.path.join(out, name + "-calibrate"))
    return f["train_seconds"] / f["steps"]


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=2048,
                   help="training windows of the off-policy run (its time is the budget)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--warm_windows", type=int, default=2048,
                   help="windows of the off-policy epoch every run starts from (0: none)")
    p.add_argument("--calibration_steps", type=int, default=32)
    p.add_argument("--teacher_epochs", type=int, default=1)
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench_on_policy"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if (args.windows < BATCH or not seeds or args.calibration_steps < 2
            or args.warm_windows < 0):
        p.error("--windows must be >= 16, --seeds non-empty, --calibration_steps >= 2, "
                "--warm_windows >= 0")
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    weights = lm_setup.data_and_teacher(args.out, args.teacher_epochs, run, train, log)

    kinds = [("off-policy KD (kd_kl + hard_ce)", None),
             ("on-policy fraction 0.5, JSD beta 0.5", (0.5, 0.5)),
             ("on-policy fraction 0.5, JSD beta 1 (reverse KL)", (0.5, 1)),
             ("on-policy fraction 1, JSD beta 0.5", (1, 0.5)),
             ("on-policy fraction 1, JSD beta 1 (reverse KL)", (1, 1))]
    results = {label: [] for label, _ in kinds}
    for seed in seeds:
        start = None
        if args.warm_windows > 0:
            log(f"seed {seed}: the starting student, off-policy KD on {args.warm_windows} windows")
            train(config(args.out, f"warm-s{seed}", seed, args.warm_windows, weights))
            start = os.path.join(args.out, f"warm-s{seed}", "model.pt")
        log(f"seed {seed}: off-policy KD on {args.windows} windows")
        file = config(args.out, f"off-s{seed}", seed, args.windows, weights, None, start)
        train(file)
        off = figures(os.path.join(args.out, f"off-s{seed}"))
        results[kinds[0][0]].append(off)
        budget = off["train_seconds"]
        rates = {}
        for i, (label, on_policy) in enumerate(kinds[1:], start=1):
            name = f"on{i}-s{seed}"
            fraction = on_policy[0]
            if fraction not in rates:
                rates[fraction] = seconds_per_step(args.out, name, seed, weights, on_policy,
                                                   args.calibration_steps, start)
            rate = rates[fraction]
            windows = max(BATCH, int(budget / rate) * BATCH)
            log(f"seed {seed}: {label}: {rate:.3f} s/step, {windows} windows")
            train(config(args.out, name, seed, windows, weights, on_policy, start))
            results[label].append(figures(os.path.join(args.out, name)))

    print(f"\nEqual wall-clock budget: each run's training seconds ~ the off-policy run's "
          f"on {args.windows} windows; seeds {args.seeds}; "
          + (f"every run starts from an off-policy student of {args.warm_windows} windows."
             if args.warm_windows else "every run starts from fresh weights.") + "\n")
    print(f"{'run':<50} {'test ppl':>15} {'teacher NLL':>15} {'train s':>8} {'steps':>6} "
          f"{'generate':>9} {'teacher':>8} {'step':>7}")
    for label, _ in kinds:
        rows = results[label]
        ppl, ppl_sd = mean_sd([r["test_perplexity"] for r in rows])
        nll, nll_sd = mean_sd([r["teacher_nll"] for r in rows])
        secs, _ = mean_sd([r["train_seconds"] for r in rows])
        steps, _ = mean_sd([r["steps"] for r in rows])
        split = [mean_sd([r[k] for r in rows])[0] for k in ("generate", "teacher", "step")]
        print(f"{label:<50} {ppl:>8.2f} ± {ppl_sd:<4.2f} {nll:>8.3f} ± {nll_sd:<4.3f} "
              f"{secs:>8.1f} {steps:>6.0f} {split[0]:>9.1f} {split[1]:>8.1f} {split[2]:>7.1f}")
    print("\nA continuation of test text by each student (seed "
          f"{seeds[0]}, from summary.json):")
    for label, _ in kinds:
        sample = results[label][0]["sample"]
        print(f"\n{label}:\n  {sample.get('prompt', '')} >>> {sample.get('continuation', '')}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
