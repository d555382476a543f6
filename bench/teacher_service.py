"""The teacher server's figures in one run. First `teacher_bench`: bytes
per sample on the wire, samples/s and KL against dense fp32 for every
encoding at C = 10 and V = 32,000, and dynamic batching on and off. Then
the epoch time and accuracy of one distillation job three ways: the teacher
in the trainer's process, the teacher behind one `teacher_server` on
loopback, and that server with the trainer's target cache
(`teacher { cache { mode: MEMORY } }`: epoch 1 asks the server, later
epochs ask nobody).

The job is the quickstart's student (launch/configs/quickstart_student.pbtxt:
cnn_student from cnn_teacher, T = 4, 0.9 KL + 0.1 CE, 3 epochs, batch 128,
no augmentation), so its accuracy can be set beside the quickstart's. The
teacher is the quickstart's (runs/quickstart/teacher/model.pt), trained
first when missing.

usage: bash bench/teacher_service.sh [--epochs N] [--train_limit N] [--threads N]
                                    [--skip_encodings]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kdbench import modes, report, runs  # noqa: E402

REPO = runs.REPO
TEACHER = os.path.join(REPO, "runs", "quickstart", "teacher", "model.pt")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train_limit", type=int, default=0, help="0: all 60,000 images")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench", "teacher_service"))
    p.add_argument("--skip_encodings", action="store_true",
                   help="only the epoch comparison, not teacher_bench")
    args = p.parse_args()
    if args.epochs < 2:
        p.error(f"--epochs must be >= 2: the cache serves epochs after the first "
                f"(got {args.epochs})")
    if args.train_limit < 0:
        p.error(f"--train_limit must be >= 0 (got {args.train_limit})")
    if args.threads < 1:
        p.error(f"--threads must be >= 1 (got {args.threads})")
    return args


def job_spec(args):
    """launch/configs/quickstart_student.pbtxt as a bench spec."""
    mode = {"train_limit": args.train_limit, "test_limit": 0, "batch_size": 128,
            "teacher": {"arch": "cnn_teacher", "options": {}},
            "student_epochs": args.epochs, "warmup_steps": 100, "log_every_steps": 100}
    spec = modes.student_spec(mode, args.threads, 1, TEACHER, 4.0, 0.9)
    spec["data"]["augment"]["enabled"] = False
    return spec


def ensure_teacher(bin_dir):
    if os.path.exists(TEACHER):
        return
    print("training the quickstart teacher (launch/configs/quickstart_teacher.pbtxt)",
          file=sys.stderr, flush=True)
    subprocess.run([os.path.join(bin_dir, "distill"), "--quiet", "--config",
                    os.path.join(REPO, "launch", "configs", "quickstart_teacher.pbtxt")],
                   cwd=REPO, check=True)


def main():
    args = parse_args()
    bin_dir = os.path.join(args.build_dir, "bin")
    ensure_teacher(bin_dir)
    spec = job_spec(args)
    os.makedirs(args.out, exist_ok=True)
    if not args.skip_encodings:
        print("teacher_bench (encodings, batching)", file=sys.stderr, flush=True)
        proc = subprocess.run([os.path.join(bin_dir, "teacher_bench"),
                               f"--teacher_weights={TEACHER}"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise runs.BenchError(f"teacher_bench failed (exit {proc.returncode}):\n"
                                  + proc.stderr[-2000:])
        print(proc.stdout)
    results = {}
    print("in-process teacher", file=sys.stderr, flush=True)
    results["in-process teacher"] = runs.run_framework(
        bin_dir, spec, os.path.join(args.out, "inprocess"))
    server = runs.TeacherServer(bin_dir, spec["teacher"], args.threads,
                                os.path.join(args.out, "server"))
    try:
        remote = dict(spec, teacher_endpoints=[server.endpoint()])
        print("one teacher_server", file=sys.stderr, flush=True)
        results["one teacher_server"] = runs.run_framework(
            bin_dir, remote, os.path.join(args.out, "remote"))
        print("teacher_server + target cache", file=sys.stderr, flush=True)
        results["teacher_server + MEMORY cache"] = runs.run_framework(
            bin_dir, remote, os.path.join(args.out, "cached"),
            teacher_extra=runs.CACHE_SNIPPET)
    finally:
        server.stop()

    base = results["in-process teacher"]
    base_later = statistics.median(base.epoch_seconds[1:])
    m = runs.machine_description()
    print("Epoch time, command: `bash bench/teacher_service.sh"
          + (f" --epochs {args.epochs}" if args.epochs != 3 else "")
          + (f" --train_limit {args.train_limit}" if args.train_limit else "")
          + f"` · {m['cpu']}, {m['cores']} cores, {args.threads} threads per process "
          f"(the server's and the trainer's share the cores), load average "
          f"{m['load_at_start']} at the start")
    print()
    print("| teacher | " + " | ".join(f"epoch {i + 1}" for i in range(args.epochs))
          + " | epochs 2.. (median) vs in-process | test accuracy |")
    print("|---|" + "---|" * args.epochs + "---|---|")
    table = {}
    for name, r in results.items():
        later = statistics.median(r.epoch_seconds[1:])
        cells = " | ".join(report.seconds(s) for s in r.epoch_seconds)
        print(f"| {name} | {cells} | {report.seconds(later)} = "
              f"{report.fmt_ratio(later / base_later)} | {report.pct(r.accuracy)} |")
        table[name] = {"epoch_seconds": r.epoch_seconds, "accuracy": r.accuracy,
                       "later_epochs_median": later, "ratio_to_inprocess": later / base_later,
                       "teacher_samples_by_epoch": [e.get("teacher_samples")
                                                    for e in r.epochs],
                       "run_dir": r.run_dir}
    cached = results["teacher_server + MEMORY cache"]
    asked = [e.get("teacher_samples", 0) for e in cached.epochs]
    print()
    print(f"Samples the cached run asked the server for, per epoch: "
          f"{', '.join(f'{n:,}' for n in asked)}.")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except runs.BenchError as e:
        print(f"teacher_service: error: {e}", file=sys.stderr)
        sys.exit(1)
