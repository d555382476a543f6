"""Runs of the framework (`distill`) and of the PyTorch reference.

Every run gets a job spec (bench/kdbench/modes.py), writes metrics.jsonl and
summary.json into its own folder, and comes back as a RunResult (training)
or a QuantizeResult (the INT8 stage).
"""
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.path.join(REPO, "bench", "reference", "distill_reference.py")
PYTHON = "/usr/bin/python3"

# The config text that turns on cached teacher targets, inside `teacher { }`.
CACHE_SNIPPET = "cache { mode: MEMORY }"


class BenchError(Exception):
    pass


class RunResult:
    """What one training run left in its folder."""

    def __init__(self, kind, spec, run_dir, wall_seconds):
        self.kind = kind  # "framework" or "reference"
        self.spec = spec
        self.run_dir = run_dir
        self.wall_seconds = wall_seconds
        with open(os.path.join(run_dir, "summary.json")) as f:
            self.summary = json.load(f)
        self.steps, self.epochs = [], []
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                record = json.loads(line)
                (self.epochs if record["type"] == "epoch" else self.steps).append(record)

    @property
    def accuracy(self):
        return self.summary["test_accuracy"]

    @property
    def epoch_seconds(self):
        return [e["epoch_seconds"] for e in self.epochs]

    def time_to(self, threshold):
        """Training seconds (evaluation excluded) until the test accuracy
        first reaches `threshold`; None when it never does."""
        elapsed = 0.0
        for e in self.epochs:
            elapsed += e["epoch_seconds"]
            if e.get("test_accuracy") is not None and e["test_accuracy"] >= threshold:
                return elapsed
        return None

    def profile(self):
        """Seconds per phase summed over epochs, and the unaccounted rest."""
        total = {}
        for e in self.epochs:
            for k, v in e.get("profile_seconds", {}).items():
                total[k] = total.get(k, 0.0) + v
        total["other"] = max(sum(self.epoch_seconds) - sum(total.values()), 0.0)
        return total


class QuantizeResult:
    """What one QUANTIZE run left: summary.json and qat/quantization_report.json."""

    def __init__(self, spec, run_dir, wall_seconds):
        self.spec = spec
        self.run_dir = run_dir
        self.wall_seconds = wall_seconds
        with open(os.path.join(run_dir, "qat", "quantization_report.json")) as f:
            self.report = json.load(f)

    @property
    def fp32_accuracy(self):
        return self.report["accuracy"]["fp32"]["accuracy"]

    @property
    def int8_accuracy(self):
        """The exported INT8 model's: after QAT when it ran, else after PTQ."""
        return self.report["exported_int8_accuracy"]

    @property
    def int8_onnx_bytes(self):
        return self.report["onnx_file_bytes"]["int8"]

    @property
    def fp32_onnx_bytes(self):
        return self.report["onnx_file_bytes"]["fp32"]


def _quote(s):
    return json.dumps(str(s))


def _model_text(model):
    parts = [f"arch: {_quote(model['arch'])}"]
    for key, value in sorted(model.get("options", {}).items()):
        parts.append(f"options {{ key: {_quote(key)} value: {value} }}")
    if model.get("weights"):
        parts.append(f"weights: {_quote(model['weights'])}")
    return " ".join(parts)


def config_text(spec, run_dir, teacher_extra=""):
    """The `distill` job config (protobuf text) for a job spec."""
    d, aug, opt, sched = spec["data"], spec["data"]["augment"], spec["optimizer"], \
        spec["lr_schedule"]
    lines = [
        f"name: {_quote(spec['name'])}",
        f"mode: {spec['mode']}",
        f"run_dir: {_quote(run_dir)}",
        f"student {{ {_model_text(spec['student'])} }}",
    ]
    if spec.get("teacher"):
        # A spec with teacher_endpoints distills through those servers
        # (which serve spec["teacher"]) instead of loading the model.
        source = " ".join(f"endpoints: {_quote(e)}" for e in spec.get("teacher_endpoints", []))
        source = source or " ".join(
            [f"model {{ {_model_text(spec['teacher'])} }}"] +
            [f"ensemble {{ {_model_text(m)} }}" for m in spec["teacher"].get("ensemble", [])])
        lines.append(f"teacher {{ {source} {teacher_extra} }}")
        lines.append(f"temperature: {spec['temperature']}")
    for term in spec["loss"]:
        lines.append(f"loss {{ name: {_quote(term['name'])} weight: {term['weight']} }}")
    lines += [
        f"data {{ dir: {_quote(d['dir'])} train_limit: {d['train_limit']} "
        f"test_limit: {d['test_limit']} augment {{ enabled: {str(aug['enabled']).lower()} "
        f"crop_padding: {aug['crop_padding']} "
        f"horizontal_flip: {str(aug['horizontal_flip']).lower()} }} }}",
        f"epochs: {spec['epochs']}",
        f"batch_size: {spec['batch_size']}",
        f"optimizer {{ type: SGD lr: {opt['lr']} momentum: {opt['momentum']} "
        f"nesterov: {str(opt['nesterov']).lower()} weight_decay: {opt['weight_decay']} }}",
        f"lr_schedule {{ type: {sched['type']} warmup_steps: {sched['warmup_steps']} "
        f"min_lr: {sched['min_lr']} }}",
        f"seed: {spec['seed']}",
        f"threads: {spec['threads']}",
        f"log_every_steps: {spec['log_every_steps']}",
        "checkpoint_every_epochs: 0",
        "keep_checkpoints: 1",
    ]
    if spec.get("qat"):
        q = spec["qat"]
        lines.append(f"qat {{ calibration_batches: {q['calibration_batches']} "
                     f"epochs: {q['epochs']} }}")
    return "\n".join(lines) + "\n"


def run_folder(out, name):
    """`out` or, when unset, runs/bench/<name>-<date-time>; made, absolute."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.abspath(out or os.path.join(REPO, "runs", "bench", f"{name}-{stamp}"))
    os.makedirs(out, exist_ok=True)
    return out


def build(build_dir, targets):
    """Builds the named targets with launch/build.sh into build_dir."""
    env = dict(os.environ, DISTILL_BUILD_DIR=build_dir)
    proc = subprocess.run(["bash", os.path.join(REPO, "launch", "build.sh"), *targets],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BenchError("build failed:\n" + proc.stdout[-3000:])


# glibc's malloc gives freed blocks of a few MB back to the kernel and the
# next step faults them in again. On the 2-core build machine a run could
# settle into ~85,000 page faults a second, 30% system time and 2.3x slower
# epochs (the reference side of a full run, seeds 2 and 3, 2026-12-03).
# Every run of both sides keeps the memory it had instead; the same knobs
# PyTorch's CPU performance notes turn (or a different allocator).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
              "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
              "MALLOC_TOP_PAD_": str(256 << 20)}


def run_env():
    """The environment of every benchmarked process, both sides."""
    return dict(os.environ, **MALLOC_ENV)


def _run(cmd, what, log_path):
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return seconds


def _fresh_dir(run_dir):
    """An empty run folder: `distill` appends to a metrics.jsonl it finds
    (that is how --resume keeps a run's history), so a folder left by an
    earlier, interrupted bench would mix two runs' epochs."""
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)


# Set by a harness's --reuse: a run folder that already holds a finished
# run of exactly the same job is read instead of trained again, so an
# interrupted multi-hour benchmark picks up where it stopped. Only up to the
# first run that trains: later runs may read what it wrote (a teacher, a
# student's weights), so from there on everything trains again.
REUSE = False
_trained = False


def _finished(run_dir, job_file, job_text):
    """True when REUSE is on, nothing has trained yet in this process and
    run_dir holds a finished run (summary.json) whose job file says exactly
    job_text. False marks the run as training."""
    global _trained
    if _trained or not REUSE or not os.path.exists(os.path.join(run_dir, "summary.json")):
        _trained = True
        return False
    # A teacher server's port is new each time; the job is the same.
    def job(text):
        return re.sub(r'endpoints: "127\.0\.0\.1:[0-9]+"', "endpoints: <loopback>", text)
    try:
        with open(os.path.join(run_dir, job_file)) as f:
            same = job(f.read()) == job(job_text)
    except OSError:
        same = False
    _trained = not same
    return same


def _run_distill(bin_dir, spec, run_dir, teacher_extra="", extra_flags=()):
    """Writes the spec's config into a fresh run_dir, runs `distill` on it
    and returns the wall seconds (kept in run_dir/wall_seconds for --reuse)."""
    text = config_text(spec, run_dir, teacher_extra)
    wall_file = os.path.join(run_dir, "wall_seconds")
    if _finished(run_dir, "job.pbtxt", text):
        try:
            with open(wall_file) as f:
                return float(f.read())
        except (OSError, ValueError):
            return None
    _fresh_dir(run_dir)
    config = os.path.join(run_dir, "job.pbtxt")
    with open(config, "w") as f:
        f.write(text)
    seconds = _run([os.path.join(bin_dir, "distill"), "--quiet", "--config", config,
                    *extra_flags], f"distill {spec['name']}",
                   os.path.join(run_dir, "distill.log"))
    with open(wall_file, "w") as f:
        f.write(f"{seconds}\n")
    return seconds


def run_framework(bin_dir, spec, run_dir, teacher_extra="", extra_flags=()):
    seconds = _run_distill(bin_dir, spec, run_dir, teacher_extra, extra_flags)
    return RunResult("framework", spec, run_dir, seconds)


def run_quantize(bin_dir, spec, run_dir):
    return QuantizeResult(spec, run_dir, _run_distill(bin_dir, spec, run_dir))


def run_reference(spec, run_dir):
    text = json.dumps(spec, indent=1)
    if _finished(run_dir, "spec.json", text):
        return RunResult("reference", spec, run_dir, None)
    _fresh_dir(run_dir)
    spec_path = os.path.join(run_dir, "spec.json")
    with open(spec_path, "w") as f:
        f.write(text)
    seconds = _run([PYTHON, REFERENCE, "--spec", spec_path, "--run_dir", run_dir],
                   f"reference {spec['name']}", os.path.join(run_dir, "reference.log"))
    return RunResult("reference", spec, run_dir, seconds)


def cached_teacher(bin_dir, cache_root, spec, log):
    """Trains the teacher once per distinct spec; later runs reuse it."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = os.path.join(cache_root, f"teacher-{key}")
    if os.path.exists(os.path.join(run_dir, "summary.json")) and \
            os.path.exists(os.path.join(run_dir, "model.pt")):
        log(f"teacher: reusing {os.path.relpath(run_dir, REPO)}")
        result = RunResult("framework", spec, run_dir, 0.0)
        result.reused = True
        return result
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"teacher: training {spec['student']['arch']} for {spec['epochs']} epochs "
        f"into {os.path.relpath(run_dir, REPO)}")
    result = run_framework(bin_dir, spec, run_dir)
    result.reused = False
    return result


# ---------------------------------------------------------------- data order

def check_data_order(bin_dir, spec, batches, epoch, work_dir):
    """Compares the framework's first batches (ids and augmented pixels) with
    the reference's. Returns a dict with `passed` and what was compared."""
    fw_dir, ref_dir = os.path.join(work_dir, "framework"), os.path.join(work_dir, "reference")
    os.makedirs(work_dir, exist_ok=True)
    aug = spec["data"]["augment"]
    _run([os.path.join(bin_dir, "dump_batches"), f"--data_dir={spec['data']['dir']}",
          f"--train_limit={spec['data']['train_limit']}", f"--seed={spec['seed']}",
          f"--epoch={epoch}", f"--batch_size={spec['batch_size']}", f"--batches={batches}",
          f"--augment={str(aug['enabled']).lower()}", f"--crop_padding={aug['crop_padding']}",
          f"--horizontal_flip={str(aug['horizontal_flip']).lower()}", f"--out={fw_dir}"],
         "dump_batches", os.path.join(work_dir, "dump_batches.log"))
    os.makedirs(ref_dir, exist_ok=True)
    spec_path = os.path.join(ref_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    _run([PYTHON, REFERENCE, "--spec", spec_path, "--dump_batches", str(batches),
          "--epoch", str(epoch), "--out", ref_dir], "reference --dump_batches",
         os.path.join(work_dir, "reference_dump.log"))
    with open(os.path.join(fw_dir, "ids.json")) as f:
        fw_ids = json.load(f)
    with open(os.path.join(ref_dir, "ids.json")) as f:
        ref_ids = json.load(f)
    fw_x = np.fromfile(os.path.join(fw_dir, "inputs.f32"), dtype=np.float32)
    ref_x = np.fromfile(os.path.join(ref_dir, "inputs.f32"), dtype=np.float32)
    samples = sum(len(b) for b in fw_ids)
    # How many of the compared samples were actually moved or flipped, from
    # the reference's own draws: a check of identical pixels proves little
    # if augmentation left every sample alone.
    sys.path.insert(0, os.path.dirname(REFERENCE))
    import distill_reference  # noqa: E402
    ids = np.array([i for b in fw_ids for i in b], dtype=np.int64)
    top, left, flips = distill_reference.augment_draws(
        ids, spec["seed"], epoch, aug["crop_padding"], aug["horizontal_flip"])
    pad = aug["crop_padding"]
    augmented = int(np.sum((top != pad) | (left != pad) | flips)) if aug["enabled"] else 0
    ids_equal = fw_ids == ref_ids
    pixels_equal = fw_x.shape == ref_x.shape and bool(np.array_equal(fw_x, ref_x))
    return {"epoch": epoch, "batches": len(fw_ids), "samples": samples,
            "ids_equal": ids_equal, "pixels_equal": pixels_equal,
            "max_abs_pixel_diff": float(np.max(np.abs(fw_x - ref_x)))
            if fw_x.shape == ref_x.shape and fw_x.size else None,
            "first_ids": fw_ids[0][:8] if fw_ids else [],
            "augmented_samples": augmented,
            "passed": ids_equal and pixels_equal and samples > 0}


class TeacherServer:
    """A `teacher_server` process on loopback (the contract in the teacher
    server's docs): started with --port_file, stopped with SIGTERM."""

    def __init__(self, bin_dir, teacher_spec, threads, work_dir):
        os.makedirs(work_dir, exist_ok=True)
        self.port_file = os.path.join(work_dir, "port")
        # A port file left by an earlier server would name a dead port.
        if os.path.exists(self.port_file):
            os.remove(self.port_file)
        options = teacher_spec.get("options") or {}
        cmd = [os.path.join(bin_dir, "teacher_server"), "--arch", teacher_spec["arch"],
               "--arch_options=" + ",".join(f"{k}={v}" for k, v in options.items()),
               "--weights", teacher_spec["weights"], "--port_file", self.port_file,
               f"--threads={threads}"]
        self.log = open(os.path.join(work_dir, "teacher_server.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=run_env())

    def endpoint(self, deadline_seconds=60):
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                with open(self.log.name) as f:
                    last = (f.read().strip().splitlines() or [""])[-1]
                raise BenchError(f"teacher_server exited with {self.proc.returncode}: {last}")
            if os.path.exists(self.port_file):
                with open(self.port_file) as f:
                    return f"127.0.0.1:{f.read().strip()}"
            # Polls a file another process writes atomically; no event to wait on.
            time.sleep(0.05)
        raise BenchError("teacher_server did not write its port file within "
                         f"{deadline_seconds} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def machine_description():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    os_name = "Linux"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    import torch  # noqa: E402 (only for its version)
    version = f"PyTorch {torch.__version__}"
    # Debian's python3-torch reports a pre-release version string; the
    # package versions name the builds the two sides use.
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n",
                           "python3-torch", "libtorch-dev"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        version = ", ".join(proc.stdout.strip().splitlines())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "os": os_name,
            "torch": version, "load_at_start": round(load, 2)}


def log_to_stderr(message):
    print(message, file=sys.stderr, flush=True)
