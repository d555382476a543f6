#!/usr/bin/env python3
"""The soak run: a distillation through 2 teacher servers under chaos.

Trains a small teacher (mlp, 2 epochs; once), then distills a smaller mlp
student from it twice (350 epochs of Fashion-MNIST by default, ~10.5
minutes each) through two `teacher_server`s on loopback, same config and seed:

  undisturbed  the servers are left alone;
  chaos        while it trains, a loop disturbs one server at a time, in
               turn: SIGKILL and a restart on the same port; SIGSTOP for
               longer than the answer timeout, then SIGCONT; and the
               slow-reader attack (bench/slow_reader.py: 8 streams that
               send 512-image batches and never read).

Every 2 s it samples the RSS of the trainer and both servers. It reports,
for each run: samples trained against epochs x train size (from the epoch
records), samples the teacher answered (each trained sample must be
answered exactly once: none lost, none doubled), batches resent and
endpoint failures, the final test accuracy, and the peak RSS of each
process in each quarter of the run (flat memory: the last quarter's peak
near the first's). Writes soak_report.json and rss.csv into --out.

usage: bash bench/soak.sh [--epochs N] [--period S] [--out DIR]
"""
import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SIZE = 60000
BATCH = 128


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=350,
                   help="student epochs (350 take ~10.5 min on 2 cores)")
    p.add_argument("--period", type=float, default=20,
                   help="seconds between two disturbances")
    p.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench", "soak"))
    p.add_argument("--skip_undisturbed", action="store_true",
                   help="only the chaos run")
    a = p.parse_args()
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1 (got {a.epochs})")
    if a.period < 10:
        p.error(f"--period must be >= 10 s: each disturbance lasts up to 8 s "
                f"(got {a.period})")
    return a


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """A teacher_server on a fixed loopback port, restartable there."""

    def __init__(self, bin_dir, weights, name, work_dir):
        self.bin_dir, self.weights, self.name = bin_dir, weights, name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(work_dir, f"{name}.log"), "a")
        self.proc = None
        self.start()

    def start(self):
        port_file = os.path.join(os.path.dirname(self.log.name), f"{self.name}.port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.proc = subprocess.Popen(
            [os.path.join(self.bin_dir, "teacher_server"), "--arch=mlp",
             f"--weights={self.weights}", f"--port={self.port}",
             f"--port_file={port_file}", "--threads=1"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log.name}")
            time.sleep(0.05)  # polls a file the server writes atomically

    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait()


def train_teacher(bin_dir, out):
    weights = os.path.join(out, "teacher", "model.pt")
    if os.path.exists(weights):
        return weights
    config = os.path.join(out, "teacher.pbtxt")
    with open(config, "w") as f:
        f.write('mode: TRAIN\nstudent { arch: "mlp" }\nbatch_size: 128 epochs: 2\n'
                f'threads: 1 seed: 1\nrun_dir: "{os.path.join(out, "teacher")}"\n')
    log("training the teacher (mlp, 2 epochs)")
    subprocess.run([os.path.join(bin_dir, "distill"), "--quiet", "--config", config],
                   check=True)
    return weights


def student_config(run_dir, endpoints, epochs):
    eps = " ".join(f'endpoints: "{e}"' for e in endpoints)
    return (f'mode: DISTILL\nrun_dir: "{run_dir}"\n'
            'student { arch: "mlp" options { key: "hidden1" value: 128 }\n'
            '  options { key: "hidden2" value: 64 } }\n'
            f"teacher {{ {eps} answer_timeout_seconds: 3 failover_grace_seconds: 120 }}\n"
            f"temperature: 4 batch_size: {BATCH} epochs: {epochs} threads: 1 seed: 7\n"
            "log_every_steps: 50 checkpoint_every_epochs: 1\n")


class Sampler(threading.Thread):
    """RSS of the trainer and the servers every 2 s into rows."""

    def __init__(self, trainer, servers):
        super().__init__(daemon=True)
        self.trainer, self.servers = trainer, servers
        self.rows, self.done = [], threading.Event()
        self.start_time = time.monotonic()

    def run(self):
        while not self.done.wait(2.0):
            row = {"t": round(time.monotonic() - self.start_time, 1),
                   "trainer": rss_mb(self.trainer.pid)}
            for s in self.servers:
                pid = s.pid()
                row[s.name] = rss_mb(pid) if pid else None
            self.rows.append(row)


def quarters(rows, key):
    values = [(r["t"], r[key]) for r in rows if r.get(key) is not None]
    if not values:
        return []
    end = values[-1][0]
    out = []
    for q in range(4):
        part = [v for t, v in values if q * end / 4 <= t <= (q + 1) * end / 4]
        out.append(round(max(part), 1) if part else None)
    return out


def chaos(servers, stop, proto_dir, events, period, t0):
    """Disturbs one server at a time, in turn, until `stop` is set."""
    actions = ["kill", "stop", "slow_reader"]
    i = 0
    while not stop.wait(period):
        server = servers[i % len(servers)]
        action = actions[(i // len(servers)) % len(actions)]
        i += 1
        start = time.monotonic()
        if action == "kill":
            server.proc.kill()
            server.proc.wait()
            time.sleep(3)  # the server stays down this long
            server.start()
        elif action == "stop":
            server.proc.send_signal(signal.SIGSTOP)
            time.sleep(8)  # longer than the trainer's 3 s answer timeout
            server.proc.send_signal(signal.SIGCONT)
        else:
            pid = server.pid()
            proc = subprocess.run(
                ["/usr/bin/python3", os.path.join(REPO, "bench", "slow_reader.py"),
                 "--proto_dir", proto_dir, "--address", server.address,
                 "--server_pid", str(pid), "--streams", "8", "--batches", "40",
                 "--rows", "512", "--seconds", "8"],
                capture_output=True, text=True)
            action += f" (exit {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]})"
        events.append({"t": round(start - t0, 1), "server": server.name,
                       "action": action, "seconds": round(time.monotonic() - start, 1)})
        log(f"{server.name}: {action}")


def run(name, bin_dir, weights, out, epochs, period=None):
    work = os.path.join(out, name)
    os.makedirs(work, exist_ok=True)
    run_dir = os.path.join(work, "run")
    if os.path.isdir(run_dir):
        subprocess.run(["rm", "-rf", run_dir], check=True)
    servers = [Server(bin_dir, weights, "server_a", work),
               Server(bin_dir, weights, "server_b", work)]
    config = os.path.join(work, "job.pbtxt")
    with open(config, "w") as f:
        f.write(student_config(run_dir, [s.address for s in servers], epochs))
    t0 = time.monotonic()
    log(f"{name}: distilling {epochs} epochs through {', '.join(s.address for s in servers)}")
    with open(os.path.join(work, "distill.log"), "w") as trainer_log:
        trainer = subprocess.Popen([os.path.join(bin_dir, "distill"), "--config", config],
                                   stdout=trainer_log, stderr=subprocess.STDOUT)
    sampler = Sampler(trainer, servers)
    sampler.start()
    stop, events = threading.Event(), []
    disturber = None
    if period is not None:
        disturber = threading.Thread(
            target=chaos, daemon=True,
            args=(servers, stop, os.path.join(REPO, "proto"), events, period, t0))
        disturber.start()
    code = trainer.wait()
    wall = time.monotonic() - t0
    stop.set()
    if disturber:
        disturber.join()
    sampler.done.set()
    sampler.join()
    for s in servers:
        s.stop()
    with open(os.path.join(work, "rss.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["t", "trainer", "server_a", "server_b"])
        writer.writeheader()
        writer.writerows(sampler.rows)
    epochs_seen, steps, per_epoch, resent, failures = 0, 0, [], 0, 0
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            for line in f:
                r = json.loads(line)
                if r.get("type") != "epoch":
                    continue
                epochs_seen += 1
                steps = r["step"]
                per_epoch.append(r.get("teacher_samples", 0))
                resent += r.get("teacher_resent_batches", 0)
                failures += r.get("teacher_endpoint_failures", 0)
    summary = {}
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    return {
        "exit_code": code, "wall_seconds": round(wall, 1), "epochs": epochs_seen,
        "steps": steps, "steps_expected": epochs * -(-TRAIN_SIZE // BATCH),
        "teacher_samples_per_epoch": sorted(set(per_epoch)),
        "teacher_samples_answered": sum(per_epoch),
        "samples_expected": epochs * TRAIN_SIZE, "resent_batches": resent,
        "endpoint_failures": failures, "test_accuracy": summary.get("test_accuracy"),
        "rss_peak_mb_by_quarter": {k: quarters(sampler.rows, k)
                                   for k in ("trainer", "server_a", "server_b")},
        "disturbances": events,
    }


def main():
    args = parse_args()
    bin_dir = os.path.join(args.build_dir, "bin")
    os.makedirs(args.out, exist_ok=True)
    weights = train_teacher(bin_dir, args.out)
    report = {"epochs": args.epochs, "period_seconds": args.period}
    if not args.skip_undisturbed:
        report["undisturbed"] = run("undisturbed", bin_dir, weights, args.out, args.epochs)
    report["chaos"] = run("chaos", bin_dir, weights, args.out, args.epochs, args.period)
    with open(os.path.join(args.out, "soak_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{'':28}" + "".join(f"{k:>16}" for k in report if isinstance(report[k], dict)))
    runs = [k for k in report if isinstance(report[k], dict)]
    for field in ("exit_code", "wall_seconds", "epochs", "steps", "steps_expected",
                  "teacher_samples_per_epoch", "teacher_samples_answered",
                  "samples_expected", "resent_batches", "endpoint_failures",
                  "test_accuracy"):
        print(f"{field:28}" + "".join(f"{str(report[r][field]):>16}" for r in runs))
    for r in runs:
        for proc, peaks in report[r]["rss_peak_mb_by_quarter"].items():
            print(f"{r} {proc} peak RSS MB by quarter: {peaks}")
    chaos_run = report["chaos"]
    # Every step taken, every sample answered exactly once.
    ok = (chaos_run["exit_code"] == 0
          and chaos_run["steps"] == chaos_run["steps_expected"]
          and chaos_run["teacher_samples_answered"] == chaos_run["samples_expected"])
    print("soak: " + ("nothing lost or doubled" if ok else "MISMATCH (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
