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
* --reuse over the same folder keeps finished runs of unchanged jobs and
  trains the unfinished and the changed ones again.

Exit 77 (skipped) when /usr/bin/python3 has no torch or numpy.
usage: compare_smoke_test.py --build_dir BUILD
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kdbench import smoke  # noqa: E402

smoke.require_torch()
COMPARE = os.path.join(HERE, "compare.py")
check = smoke.Checks("compare.py --smoke")


def reuse(build_dir, tmp, out, first):
    """--reuse over the same folder keeps the finished runs of unchanged jobs
    up to the first run that must train (its job changed, or it never
    finished); that one and every later one train again."""
    order = ["distill-s1", "reference-s1", "hard-s1", "server-s1", "cached-s1",
             "hard-noaug-s1", "ptq-s1", "qat-s1"]

    def mtimes():
        # The log each run writes from its start (QUANTIZE leaves no metrics).
        return [os.path.getmtime(os.path.join(
            out, n, "reference.log" if n.startswith("reference") else "distill.log"))
            for n in order]

    def edit_job(name):
        with open(os.path.join(out, name, "job.pbtxt"), "a") as f:
            f.write("# another job\n")

    def kill(name):
        os.remove(os.path.join(out, name, "summary.json"))

    for spoil, first_trained in ((edit_job, "cached-s1"), (kill, "ptq-s1")):
        before = mtimes()
        spoil(first_trained)
        _, res, _ = smoke.run_harness(COMPARE, build_dir, tmp, "--threads", "2", "--reuse")
        after = mtimes()
        k = order.index(first_trained)
        for name, b, a in zip(order, before, after):
            if order.index(name) < k:
                check(a == b, f"--reuse after {spoil.__name__}({first_trained}) trained {name}")
            else:
                check(a > b, f"--reuse after {spoil.__name__}({first_trained}) kept {name}")
        check(res["runs"]["reference"] == first["runs"]["reference"],
              "--reuse reports the kept reference run differently")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    args = parser.parse_args()
    check.usage_errors(COMPARE, (
        (["--threads", "0"], "--threads must be >= 1 (got 0)"),
        (["--alpha", "1.5"], "--alpha must be in [0, 1] (got 1.5)"),
        (["--temperature", "-1"], "--temperature must be > 0 (got -1.0)")))

    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        report, res, out = smoke.run_harness(COMPARE, args.build_dir, tmp, "--threads", "2")

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
        reuse(args.build_dir, tmp, out, res)

    check.finish()


if __name__ == "__main__":
    main()
