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
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kdbench import smoke  # noqa: E402

smoke.require_torch()
SWEEP = os.path.join(HERE, "sweep.py")
check = smoke.Checks("sweep.py --smoke")


def summary_accuracy(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)["test_accuracy"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    args = parser.parse_args()
    check.usage_errors(SWEEP, (
        (["--alphas", "0.5,0"], "argument --alphas: 0 is not in (0, 1]"),
        (["--temperatures", "2,x"], "argument --temperatures: not comma-separated numbers"),
        (["--temperatures", "-1"], "argument --temperatures: -1 is not > 0"),
        (["--parallel", "0"], "--parallel must be >= 1 (got 0)")))

    with tempfile.TemporaryDirectory(prefix="sweep-smoke-") as tmp:
        stdout, res, out = smoke.run_harness(
            SWEEP, args.build_dir, tmp, "--temperatures", "1,4", "--alphas", "0.5",
            "--parallel", "2")
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
            check(f"{100 * acc:.2f}% ({100 * (acc - hard):+.2f})" in stdout,
                  f"T={t}: the printed grid lacks the cell")
        best = max(cells.values(), key=lambda c: c["mean"])
        check(res["best"] == {"temperature": best["temperature"], "alpha": best["alpha"]},
              f"best {res['best']} is not the most accurate cell")

    check.finish()


if __name__ == "__main__":
    main()
