"""Framework vs PyTorch: the quality table and the speed table in one command.

Builds `distill`, trains (or reuses) the teacher, checks that the framework
and the PyTorch reference (bench/reference/distill_reference.py) see the same
batches, then trains per seed, alternating sides: the hard-label student and
the distilled student with `distill`, the distilled student with the
reference. Prints both tables with ratios and the step-time profile, writes
results.json into the run folder and, unless --no_docs, this mode's section
of docs/BENCHMARKS.md with its plots under docs/img/.

usage: bash bench/compare.sh [--quick | --smoke] [--threads N] [--out DIR] ...
Full mode is the default (hours on a 2-core machine); --quick takes minutes.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kdbench import modes, report, runs  # noqa: E402

REPO = runs.REPO


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small budget, under 5 minutes")
    g.add_argument("--smoke", action="store_true",
                   help="the test suite's check of the harness itself (seconds)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads of every run, both sides (default: cores)")
    p.add_argument("--temperature", type=float, default=4.0,
                   help="softmax temperature of the teacher and student in kd_kl")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of kd_kl (rest: hard_ce)")
    p.add_argument("--seeds", type=int, default=0, help="override the mode's seed count")
    p.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    p.add_argument("--no_build", action="store_true", help="use the binaries as they are")
    p.add_argument("--out", help="run folder (default: runs/bench/<mode>-<time>)")
    p.add_argument("--cache_dir", default=os.path.join(REPO, "runs", "bench", "cache"),
                   help="where trained teachers are kept, keyed by their config")
    p.add_argument("--reuse", action="store_true",
                   help="with --out of an interrupted run: keep its finished runs of the "
                        "same jobs instead of training them again")
    p.add_argument("--no_docs", action="store_true",
                   help="do not touch docs/BENCHMARKS.md or docs/img/")
    args = p.parse_args()
    if args.threads < 1:
        p.error(f"--threads must be >= 1 (got {args.threads})")
    if not 0 <= args.alpha <= 1:
        p.error(f"--alpha must be in [0, 1] (got {args.alpha})")
    if not args.temperature > 0:
        p.error(f"--temperature must be > 0 (got {args.temperature})")
    if args.seeds < 0:
        p.error(f"--seeds must be >= 0 (got {args.seeds})")
    return args


def loss_agreement(fw, ref):
    """Per-step training losses of the same job on both sides."""
    ref_by_step = {s["step"]: s["loss"] for s in ref.steps}
    diffs = [(s["step"], s["loss"], ref_by_step[s["step"]]) for s in fw.steps
             if s["step"] in ref_by_step]
    if not diffs:
        raise runs.BenchError("no common logged steps between framework and reference")
    rel = [abs(a - b) / max(abs(b), 1e-12) for _, a, b in diffs]
    return {"step": diffs[0][0], "framework": diffs[0][1], "reference": diffs[0][2],
            "relative_difference": rel[0], "steps": len(diffs),
            "max_relative_difference": max(rel)}


def teacher_service_runs(args, ctx, mode, teacher_weights, out, log):
    """Distillation through one teacher server, and through it with the
    target cache (which only a remote teacher has) against no teacher."""
    bin_dir = os.path.join(args.build_dir, "bin")
    seed = mode["seeds"][0]
    spec = modes.student_spec(mode, args.threads, seed, teacher_weights,
                              args.temperature, args.alpha)
    # The cache holds targets only when augmentation is off; those runs turn
    # it off and take at least two epochs (the first fills the cache).
    cached_mode = dict(mode, student_epochs=max(2, mode["student_epochs"]))
    cached_spec = modes.student_spec(cached_mode, args.threads, seed, teacher_weights,
                                     args.temperature, args.alpha)
    hard = modes.student_spec(cached_mode, args.threads, seed)
    for s in (cached_spec, hard):
        s["data"]["augment"]["enabled"] = False
    server = runs.TeacherServer(bin_dir, spec["teacher"], args.threads,
                                os.path.join(out, "server"))
    try:
        spec["teacher_endpoints"] = cached_spec["teacher_endpoints"] = [server.endpoint()]
        log(f"framework distill through teacher_server, seed {seed}")
        r = runs.run_framework(bin_dir, spec, os.path.join(out, f"server-s{seed}"))
        log(f"framework distill through teacher_server with cached targets "
            f"(no augmentation), seed {seed}")
        c = runs.run_framework(bin_dir, cached_spec, os.path.join(out, f"cached-s{seed}"),
                               teacher_extra=runs.CACHE_SNIPPET)
    finally:
        server.stop()
    same_seed = [x for x in ctx["distill"] if x.spec["seed"] == seed]
    inproc = report.median_epoch(same_seed)
    ctx["server"] = {"server": report.median_epoch([r]), "inprocess": inproc,
                     "ratio": report.ratio(report.median_epoch([r]), inproc),
                     "accuracy": r.accuracy, "inprocess_accuracy": same_seed[0].accuracy}
    log(f"framework hard labels (no augmentation), seed {seed}")
    h = runs.run_framework(bin_dir, hard, os.path.join(out, f"hard-noaug-s{seed}"))
    cached, none = (statistics.median(x.epoch_seconds[1:]) for x in (c, h))
    ctx["cached"] = {"cached": cached, "none": none, "ratio": report.ratio(cached, none)}


def quantize_runs(args, ctx, mode, out, log):
    """PTQ and teacher-guided QAT (one epoch) of every seed's distilled student."""
    bin_dir = os.path.join(args.build_dir, "bin")
    ctx["ptq"], ctx["qat"] = [], []
    for r in ctx["distill"]:
        seed = r.spec["seed"]
        weights = os.path.join(r.run_dir, "model.pt")
        for kind, epochs in (("ptq", 0), ("qat", 1)):
            log(f"framework {kind.upper()} INT8 of the distilled student, seed {seed}")
            spec = modes.quantize_spec(r.spec, weights, epochs, mode["calibration_batches"])
            ctx[kind].append(runs.run_quantize(bin_dir, spec,
                                               os.path.join(out, f"{kind}-s{seed}")))


def main():
    args = parse_args()
    runs.REUSE = args.reuse
    mode_name, mode = modes.selected(args)
    if args.seeds > 0:
        mode["seeds"] = list(range(1, args.seeds + 1))
    out = runs.run_folder(args.out, mode_name)
    log = runs.log_to_stderr
    bin_dir = os.path.join(args.build_dir, "bin")
    command = "bash bench/compare.sh" + {"full": "", "quick": " --quick",
                                         "smoke": " --smoke"}[mode_name]
    if args.threads != (os.cpu_count() or 1):
        command += f" --threads {args.threads}"
    if args.seeds > 0:
        command += f" --seeds {args.seeds}"
    if args.temperature != 4.0:
        command += f" --temperature {args.temperature:g}"
    if args.alpha != 0.9:
        command += f" --alpha {args.alpha:g}"
    ctx = {"mode_name": mode_name, "command": command, "threads": args.threads,
           "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
           "machine": runs.machine_description(), "threshold": mode["threshold"],
           "temperature": args.temperature, "alpha": args.alpha}
    if not args.no_build:
        log(f"building distill, teacher_server and dump_batches in {args.build_dir}")
        runs.build(args.build_dir, ["distill", "teacher_server", "dump_batches"])

    teacher_spec = modes.teacher_spec(mode, args.threads)
    teacher = runs.cached_teacher(bin_dir, args.cache_dir, teacher_spec, log)
    teacher_weights = os.path.join(teacher.run_dir, "model.pt")
    ctx["teacher"] = teacher
    ctx["teacher_label"] = (modes.model_label(teacher_spec["student"])
                            + f", {teacher_spec['epochs']} epochs")
    ctx["student_label"] = modes.model_label(mode["student"])
    ctx["test_samples"] = teacher.summary.get("test_samples", 10000)
    train_n = mode["train_limit"] or 60000
    ctx["budget"] = (f"{train_n:,} training images, {mode['student_epochs']} student epochs, "
                     f"batch {mode['batch_size']}, SGD + Nesterov 0.05 with cosine decay, "
                     f"augmentation (crop padding 2, flip), seeds "
                     f"{', '.join(map(str, mode['seeds']))}; student {ctx['student_label']}; "
                     f"teacher {ctx['teacher_label']}")

    check_spec = modes.student_spec(mode, args.threads, mode["seeds"][0], teacher_weights)
    ctx["data_check"] = runs.check_data_order(bin_dir, check_spec, mode["check_batches"], 1,
                                              os.path.join(out, "data-check"))
    log(f"data order check: {'passed' if ctx['data_check']['passed'] else 'FAILED'}")
    ctx["hard"], ctx["distill"], ctx["reference"] = [], [], []
    for i, seed in enumerate(mode["seeds"]):
        spec = modes.student_spec(mode, args.threads, seed, teacher_weights,
                                  args.temperature, args.alpha)
        # Alternate which side goes first, so slow drifts in the machine's
        # load fall on both.
        order = ["framework", "reference"] if i % 2 == 0 else ["reference", "framework"]
        for side in order:
            log(f"{side} distill, seed {seed}")
            if side == "framework":
                ctx["distill"].append(runs.run_framework(
                    bin_dir, spec, os.path.join(out, f"distill-s{seed}")))
            else:
                ctx["reference"].append(runs.run_reference(
                    spec, os.path.join(out, f"reference-s{seed}")))
        log(f"framework hard labels, seed {seed}")
        ctx["hard"].append(runs.run_framework(
            bin_dir, modes.student_spec(mode, args.threads, seed),
            os.path.join(out, f"hard-s{seed}")))
    teacher_service_runs(args, ctx, mode, teacher_weights, out, log)
    quantize_runs(args, ctx, mode, out, log)
    ctx["loss_check"] = loss_agreement(ctx["distill"][0], ctx["reference"][0])

    res = report.analyze(ctx)
    if not args.no_docs:
        img_dir = os.path.join(REPO, "docs", "img")
        try:
            paths = report.plot(ctx, img_dir, f"compare-{mode_name}")
            ctx["plots"] = {k: os.path.relpath(v, os.path.join(REPO, "docs"))
                            for k, v in paths.items()}
        except ImportError as e:
            ctx["plot_error"] = f"matplotlib is not installed ({e})"
    else:
        try:
            paths = report.plot(ctx, os.path.join(out, "img"), f"compare-{mode_name}")
            ctx["plots"] = {k: os.path.relpath(v, out) for k, v in paths.items()}
        except ImportError as e:
            ctx["plot_error"] = f"matplotlib is not installed ({e})"
    text = report.markdown(ctx, res)
    print(text)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    results = {
        "mode": mode_name, "command": command, "date": ctx["date"],
        "machine": ctx["machine"], "threads": args.threads,
        "data_check": ctx["data_check"], "loss_check": ctx["loss_check"],
        "teacher": {"accuracy": teacher.accuracy, "params": teacher.summary["params"],
                    "train_seconds": teacher.summary.get("train_seconds"),
                    "reused": teacher.reused, "run_dir": teacher.run_dir},
        "runs": {k: [{"seed": r.spec["seed"], "accuracy": r.accuracy,
                      "epoch_seconds": r.epoch_seconds,
                      "accuracy_by_epoch": [e.get("test_accuracy") for e in r.epochs],
                      "run_dir": r.run_dir} for r in ctx[k]]
                 for k in ("hard", "distill", "reference")},
        "quantized": {k: [{"seed": q.spec["seed"], "fp32_accuracy": q.fp32_accuracy,
                           "int8_accuracy": q.int8_accuracy,
                           "int8_onnx_bytes": q.int8_onnx_bytes,
                           "fp32_onnx_bytes": q.fp32_onnx_bytes,
                           "wall_seconds": q.wall_seconds, "run_dir": q.run_dir}
                          for q in ctx[k]]
                      for k in ("ptq", "qat")},
        "quality": res["quality"], "speed": res["speed"], "profile": res["profile"],
        "targets": res["targets"], "plots": ctx.get("plots", {}),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    if not args.no_docs:
        report.write_docs(os.path.join(REPO, "docs", "BENCHMARKS.md"), mode_name, text)
        log("wrote docs/BENCHMARKS.md")
    log(f"results: {os.path.join(out, 'results.json')}")
    return 0 if ctx["data_check"]["passed"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except runs.BenchError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        sys.exit(1)
