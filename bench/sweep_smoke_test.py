"""Smoke test of bench/sweep.py: the grid runs end to end on a tiny budget
and what it reports is what the runs left behind.

* Every (T, alpha) cell and the hard-label student ran `distill` with the
  cell's own temperature and loss weights (read back from each run's
  job.pbtxt, which `distill` itself parsed).
* Each cell's accuracy and difference equal what its runs' summary.json
  files say, and the best cell is the one with the highest accuracy.
* Bad arguments stop the sweep with one clear line before any work.

Exit 77 (skipped) when /usr/bin/python3 has no torch or numpy.
usage: sweep_smoke_test.py --build_dir BUILD
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy  # noqa: F401
    import torch  # noqa: F401
except ImportError:
    print("skipped: python3 has no torch/numpy")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEP = os.path.join(HERE, "sweep.py")
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAILED: {what}", file=sys.stderr)


def bad_arguments():
    for flag, message in (
            (["--alphas", "0.5,0"], "argument --alphas: 0 is not in (0, 1]"),
            (["--temperatures", "2,x"], "argument --temperatures: not comma-separated numbers"),
            (["--temperatures", "-1"], "argument --temperatures: -1 is not > 0"),
            (["--parallel", "0"], "--parallel must be >= 1 (got 0)")):
        proc = subprocess.run([sys.executable, SWEEP, "--smoke", "--no_build", *flag],
                              capture_output=True, text=True)
        check(proc.returncode == 2, f"{flag}: exit code {proc.returncode}, expected 2")
        check(message in proc.stderr, f"{flag}: stderr {proc.stderr!r} lacks {message!r}")


def summary_accuracy(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)["test_accuracy"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    args = parser.parse_args()
    bad_arguments()

    with tempfile.TemporaryDirectory(prefix="sweep-smoke-") as tmp:
        out = os.path.join(tmp, "run")
        proc = subprocess.run(
            [sys.executable, SWEEP, "--smoke", "--no_build", "--no_docs",
             "--build_dir", args.build_dir, "--out", out,
             "--cache_dir", os.path.join(tmp, "cache"), "--temperatures", "1,4",
             "--alphas", "0.5", "--parallel", "2"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
            sys.exit(f"sweep.py --smoke exited with {proc.returncode}")
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)

        check(len(res["hard"]) == 1, f"{len(res['hard'])} hard-label runs, not 1")
        hard = summary_accuracy(res["hard"][0]["run_dir"])
        check(abs(res["hard_mean"] - hard) < 1e-12, f"hard mean {res['hard_mean']} vs {hard}")
        cells = {(c["temperature"], c["alpha"]): c for c in res["cells"]}
        check(set(cells) == {(1.0, 0.5), (4.0, 0.5)}, f"cells {sorted(cells)}")
        for (t, a), c in cells.items():
            run_dir = os.path.join(out, f"T{t:g}-a{a:g}-s1")
            with open(os.path.join(run_dir, "job.pbtxt")) as f:
                job = f.read()
            check(re.search(rf"^temperature: {t}$", job, re.M) is not None,
                  f"T={t}: the job does not distill at that temperature")
            check(f'loss {{ name: "kd_kl" weight: {a} }}' in job and
                  f'loss {{ name: "hard_ce" weight: {round(1 - a, 6)} }}' in job,
                  f"T={t}, alpha={a}: the job's loss weights differ")
            acc = summary_accuracy(run_dir)
            check(c["accuracies"] == [acc], f"T={t}: accuracies {c['accuracies']} vs {acc}")
            check(abs(c["delta"] - (acc - hard)) < 1e-12, f"T={t}: delta {c['delta']}")
            check(f"{100 * acc:.2f}% ({100 * (acc - hard):+.2f})" in proc.stdout,
                  f"T={t}: the printed grid lacks the cell")
        best = max(cells.values(), key=lambda c: c["mean"])
        check(res["best"] == {"temperature": best["temperature"], "alpha": best["alpha"]},
              f"best {res['best']} is not the most accurate cell")

    if failures:
        sys.exit(f"{len(failures)} checks failed")
    print("sweep.py --smoke: all checks passed")


if __name__ == "__main__":
    main()
