"""Smoke test of bench/compare.py: the harness runs end to end on a tiny
budget and what it reports is well-formed and sane.

* The framework's batches (ids and augmented pixels, from `dump_batches`)
  equal the PyTorch reference's, and augmentation moved some of them.
* Both sides train the same job: the first logged training loss of the
  distilled student agrees between `distill` and the reference to 1e-4
  relative (the values come from two independent implementations).
* Accuracies lie in (0, 1], epoch times and ratios are positive, the tables
  and the profile are printed.
* The INT8 rows come from real QUANTIZE runs of the distilled student: the
  FP32 accuracy the stage measures is the distilled run's own (same weights,
  same test set), and the INT8 ONNX file is under half the FP32 one.
* Bad arguments stop the harness with one clear line before any work.

Exit 77 (skipped) when /usr/bin/python3 has no torch or numpy.
usage: compare_smoke_test.py --build_dir BUILD
"""
import argparse
import json
import os
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
COMPARE = os.path.join(HERE, "compare.py")
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAILED: {what}", file=sys.stderr)


def bad_arguments():
    for flag, message in ((["--threads", "0"], "--threads must be >= 1 (got 0)"),
                          (["--alpha", "1.5"], "--alpha must be in [0, 1] (got 1.5)"),
                          (["--temperature", "-1"], "--temperature must be > 0 (got -1.0)")):
        proc = subprocess.run([sys.executable, COMPARE, "--smoke", *flag],
                              capture_output=True, text=True)
        check(proc.returncode == 2, f"{flag}: exit code {proc.returncode}, expected 2")
        check(message in proc.stderr, f"{flag}: stderr {proc.stderr!r} lacks {message!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    args = parser.parse_args()
    bad_arguments()

    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        out = os.path.join(tmp, "run")
        proc = subprocess.run(
            [sys.executable, COMPARE, "--smoke", "--no_build", "--no_docs",
             "--build_dir", args.build_dir, "--out", out,
             "--cache_dir", os.path.join(tmp, "cache"), "--threads", "2"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
            sys.exit(f"compare.py --smoke exited with {proc.returncode}")
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        report = proc.stdout

        dc = res["data_check"]
        check(dc["ids_equal"], "data order: framework and reference ids differ")
        check(dc["pixels_equal"], f"augmented pixels differ (max {dc['max_abs_pixel_diff']})")
        check(dc["samples"] == 2 * 64, f"data check compared {dc['samples']} samples, not 128")
        check(dc["augmented_samples"] > 64,
              f"only {dc['augmented_samples']} of 128 samples were augmented")

        lc = res["loss_check"]
        check(lc["step"] == 1, f"first common logged step is {lc['step']}, not 1")
        check(lc["relative_difference"] < 1e-4,
              f"first-step loss: framework {lc['framework']} vs reference {lc['reference']}")
        # At T = 4 with 10 classes and random weights the loss is positive and
        # far from 0; a broken loss would show here.
        check(lc["framework"] > 0.1, f"first-step loss {lc['framework']} is implausible")

        for kind in ("hard", "distill", "reference"):
            check(len(res["runs"][kind]) == 1, f"{kind}: {len(res['runs'][kind])} runs, not 1")
            for r in res["runs"][kind]:
                check(0 < r["accuracy"] <= 1, f"{kind}: accuracy {r['accuracy']}")
                check(all(t > 0 for t in r["epoch_seconds"]), f"{kind}: epoch times")
        check(0 < res["teacher"]["accuracy"] <= 1, "teacher accuracy")
        distilled = res["runs"]["distill"][0]["accuracy"]
        for kind in ("ptq", "qat"):
            qs = res["quantized"][kind]
            check(len(qs) == 1, f"{kind}: {len(qs)} runs, not 1")
            for q in qs:
                check(0 < q["int8_accuracy"] <= 1, f"{kind}: INT8 accuracy {q['int8_accuracy']}")
                # 500 test images: one flipped borderline prediction is 0.002.
                check(abs(q["fp32_accuracy"] - distilled) <= 0.002,
                      f"{kind}: FP32 accuracy {q['fp32_accuracy']} is not the distilled "
                      f"student's {distilled}")
                check(0 < q["int8_onnx_bytes"] < q["fp32_onnx_bytes"] / 2,
                      f"{kind}: INT8 ONNX {q['int8_onnx_bytes']} B vs FP32 "
                      f"{q['fp32_onnx_bytes']} B")
        sp = res["speed"]
        check(sp["epoch_inprocess"]["ratio"] > 0, "epoch ratio framework/reference")
        check(sp["epoch_server"]["ratio"] > 0, "epoch ratio server/in-process")
        check(sp["epoch_cached"]["ratio"] > 0, "epoch ratio cached/no teacher")
        check(0 < sp["epoch_server"]["accuracy"] <= 1, "accuracy through the server")
        check(sp["epoch_no_teacher"]["ratio_inprocess_over_none"] > 0, "in-process/none ratio")
        fa = sp["final_accuracy"]
        check(fa["agree"], f"final accuracies disagree: {fa}")
        prof = res["profile"]["framework"]
        check(prof["forward"] > 0 and prof["backward"] > 0 and prof["teacher"] > 0,
              f"framework profile lacks phases: {prof}")
        check(res["profile"]["framework_hard"]["teacher"] == 0,
              "the hard-label run reports teacher time")

        for needle in ("### Quality (Fashion-MNIST test set)", "### Speed",
                       "| distillation epoch, in-process teacher (median) |",
                       "| phase | framework (distill) |", "2 Conv <100K parameters: 92.50%",
                       "| student, PTQ INT8 |", "| epoch through one teacher server vs in-process |",
                       "bit-identical"):
            check(needle in report, f"report lacks {needle!r}")
        check(os.path.exists(os.path.join(out, "report.md")), "report.md missing")

    if failures:
        sys.exit(f"{len(failures)} checks failed")
    print("compare.py --smoke: all checks passed")


if __name__ == "__main__":
    main()
