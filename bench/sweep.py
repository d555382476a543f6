"""Temperature and alpha for the distilled student: a grid, side by side.

Distillation pays only at a temperature and a KL weight that suit the
teacher and the student; this finds them with the same budget, teacher and
student as bench/compare.sh, instead of by hand. Per seed it trains the
hard-label student once and the distilled student once per (T, alpha), runs
`--parallel` jobs at a time (each with cores / parallel threads), and prints
the grid of test accuracies (mean over seeds) with each cell's difference to
the hard-label student of the same seeds. Writes results.json into the run
folder and, unless --no_docs, its section of docs/BENCHMARKS.md.

usage: bash bench/sweep.sh [--quick | --smoke] [--temperatures 1,2,4,8]
                           [--alphas 0.5,0.9] [--seeds N] [--parallel N] ...
The full mode's budget (hours on a 2-core machine) is compare.sh's; pass the
winning cell to it: bash bench/compare.sh --temperature T --alpha A.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kdbench import modes, report, runs  # noqa: E402

REPO = runs.REPO


def number_list(range_text, check):
    """An argparse type: comma-separated numbers, each in range."""
    def parse(text):
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}")
        if not values:
            raise argparse.ArgumentTypeError("no values")
        for v in values:
            if not check(v):
                raise argparse.ArgumentTypeError(f"{v:g} is not {range_text}")
        return sorted(set(values))
    return parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="compare.sh's quick budget")
    g.add_argument("--smoke", action="store_true", help="the test suite's check (seconds)")
    p.add_argument("--temperatures", type=number_list("> 0", lambda v: v > 0),
                   default=[1.0, 2.0, 4.0, 8.0], help="comma-separated, each > 0")
    p.add_argument("--alphas", type=number_list("in (0, 1]", lambda v: 0 < v <= 1),
                   default=[0.5, 0.9], help="weights of kd_kl (rest: hard_ce), in (0, 1]")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..N per cell (default 1)")
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1,
                   help="jobs at a time; each gets cores / parallel threads")
    p.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    p.add_argument("--no_build", action="store_true", help="use the binaries as they are")
    p.add_argument("--out", help="run folder (default: runs/bench/sweep-<mode>-<time>)")
    p.add_argument("--cache_dir", default=os.path.join(REPO, "runs", "bench", "cache"),
                   help="where trained teachers are kept (shared with compare.sh)")
    p.add_argument("--no_docs", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1 (got {args.seeds})")
    if args.parallel < 1:
        p.error(f"--parallel must be >= 1 (got {args.parallel})")
    return args


def grid(hard, cells):
    """{(T, alpha): {"mean", "delta", "accuracies"}} and the hard-label mean."""
    hard_mean, _ = report.mean_std([r.accuracy for r in hard])
    out = {}
    for key, results in cells.items():
        mean, std = report.mean_std([r.accuracy for r in results])
        out[key] = {"mean": mean, "std": std, "delta": mean - hard_mean,
                    "accuracies": [r.accuracy for r in results]}
    return hard_mean, out


def markdown(ctx, hard, hard_mean, table, best):
    temps, alphas = ctx["temperatures"], ctx["alphas"]
    m = ctx["machine"]
    lines = [f"Command: `{ctx['command']}` · date {ctx['date']} · machine: {m['cpu']}, "
             f"{m['cores']} cores, {m['torch']}, {ctx['parallel']} jobs at a time with "
             f"{ctx['threads']} thread{'s' if ctx['threads'] != 1 else ''} each.", "",
             f"Budget: {ctx['budget']}.", "",
             f"Student {ctx['student_label']} on hard labels only: "
             f"{report.pct(*report.mean_std([r.accuracy for r in hard]))} "
             f"(seed{'s' if len(hard) != 1 else ''} "
             f"{', '.join(str(r.spec['seed']) for r in hard)}). Each cell: the "
             f"distilled student's test accuracy (mean over the same seeds) and its "
             f"difference to that, in points; loss alpha · T² KL + (1 − alpha) · CE.", "",
             "| T \\ alpha | " + " | ".join(f"{a:g}" for a in alphas) + " |",
             "|---|" + "---|" * len(alphas)]
    for t in temps:
        cells = []
        for a in alphas:
            c = table[(t, a)]
            text = f"{100 * c['mean']:.2f}% ({100 * c['delta']:+.2f})"
            cells.append(f"**{text}**" if (t, a) == best else text)
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Best cell: T = {best[0]:g}, alpha = {best[1]:g} "
              f"({100 * table[best]['mean']:.2f}%, {100 * table[best]['delta']:+.2f} points "
              f"over hard labels). "
              + ("With one seed a cell's noise is about ±0.2 points (run-to-run spread of "
                 "the same job); confirm a winner over seeds with " if len(hard) == 1 else
                 f"Each cell is a mean over {len(hard)} seeds; the full comparison with the "
                 f"quantized rows and the reference: ")
              + f"`bash bench/compare.sh --temperature {best[0]:g} --alpha {best[1]:g}`.", ""]
    return "\n".join(lines)


def main():
    args = parse_args()
    mode_name, mode = modes.selected(args)
    mode["seeds"] = list(range(1, args.seeds + 1))
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.parallel)
    out = runs.run_folder(args.out, f"sweep-{mode_name}")
    log = runs.log_to_stderr
    bin_dir = os.path.join(args.build_dir, "bin")
    command = ("bash bench/sweep.sh" + {"full": "", "quick": " --quick",
                                        "smoke": " --smoke"}[mode_name]
               + " --temperatures " + ",".join(f"{t:g}" for t in args.temperatures)
               + " --alphas " + ",".join(f"{a:g}" for a in args.alphas)
               + f" --seeds {args.seeds} --parallel {args.parallel}")
    if not args.no_build:
        log(f"building distill in {args.build_dir}")
        runs.build(args.build_dir, ["distill"])
    # The teacher is compare.sh's (same spec, same cache), trained with
    # every core before the grid starts.
    teacher = runs.cached_teacher(bin_dir, args.cache_dir,
                                  modes.teacher_spec(mode, cores), log)
    teacher_weights = os.path.join(teacher.run_dir, "model.pt")

    jobs = []  # (key, spec, run_dir); key None is the hard-label student
    for seed in mode["seeds"]:
        jobs.append((None, modes.student_spec(mode, threads, seed),
                     os.path.join(out, f"hard-s{seed}")))
        for t in args.temperatures:
            for a in args.alphas:
                spec = modes.student_spec(mode, threads, seed, teacher_weights, t, a)
                jobs.append(((t, a), spec, os.path.join(out, f"T{t:g}-a{a:g}-s{seed}")))

    def run(job):
        key, spec, run_dir = job
        log(f"start {os.path.basename(run_dir)}")
        result = runs.run_framework(bin_dir, spec, run_dir)
        log(f"done  {os.path.basename(run_dir)}: {100 * result.accuracy:.2f}%")
        return key, result

    hard, cells = [], {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for key, result in pool.map(run, jobs):
            if key is None:
                hard.append(result)
            else:
                cells.setdefault(key, []).append(result)
    hard_mean, table = grid(hard, cells)
    best = max(table, key=lambda k: table[k]["mean"])

    train_n = mode["train_limit"] or 60000
    ctx = {"command": command, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
           "machine": runs.machine_description(), "parallel": args.parallel,
           "threads": threads, "temperatures": args.temperatures, "alphas": args.alphas,
           "student_label": modes.model_label(mode["student"]),
           "budget": (f"{train_n:,} training images, {mode['student_epochs']} student epochs, "
                      f"batch {mode['batch_size']}, augmentation (crop padding 2, flip); "
                      f"teacher {modes.model_label(teacher.spec['student'])} at "
                      f"{100 * teacher.accuracy:.2f}% ({mode['teacher_epochs']} epochs)")}
    text = markdown(ctx, hard, hard_mean, table, best)
    print(text)
    results = {"command": command, "date": ctx["date"], "mode": mode_name,
               "teacher": {"accuracy": teacher.accuracy, "run_dir": teacher.run_dir},
               "hard": [{"seed": r.spec["seed"], "accuracy": r.accuracy,
                         "run_dir": r.run_dir} for r in hard],
               "hard_mean": hard_mean,
               "cells": [{"temperature": t, "alpha": a, **v} for (t, a), v in table.items()],
               "best": {"temperature": best[0], "alpha": best[1]}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not args.no_docs:
        report.write_docs(os.path.join(REPO, "docs", "BENCHMARKS.md"), mode_name, text,
                          tool="sweep.sh",
                          title=f"Temperature and alpha ({mode_name} budget, "
                                f"`bash bench/sweep.sh`)")
        log("wrote docs/BENCHMARKS.md")
    log(f"results: {os.path.join(out, 'results.json')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except runs.BenchError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        sys.exit(1)
