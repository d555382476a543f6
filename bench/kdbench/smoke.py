"""What the bench smoke tests share: the skip when /usr/bin/python3 has no
torch, checks that are collected rather than stopping at the first, and
running a harness on the smoke budget in a scratch folder.
"""
import json
import os
import subprocess
import sys

SKIPPED = 77  # ctest's SKIP_RETURN_CODE for the bench tests


def require_torch():
    """Exits SKIPPED unless this python has numpy and torch."""
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        print("skipped: python3 has no torch/numpy")
        sys.exit(SKIPPED)


class Checks:
    """check(condition, what) records `what` when the condition fails; finish()
    exits non-zero naming how many failed, so one run reports all of them."""

    def __init__(self, name):
        self.name = name
        self.failures = []

    def __call__(self, condition, what):
        if not condition:
            self.failures.append(what)
            print(f"FAILED: {what}", file=sys.stderr)

    def usage_errors(self, script, cases):
        """Each (flags, message) of cases: `script --smoke FLAGS` exits 2 with
        the message on stderr, before any work."""
        for flags, message in cases:
            proc = subprocess.run([sys.executable, script, "--smoke", "--no_build", *flags],
                                  capture_output=True, text=True)
            self(proc.returncode == 2, f"{flags}: exit code {proc.returncode}, expected 2")
            self(message in proc.stderr, f"{flags}: stderr {proc.stderr!r} lacks {message!r}")

    def finish(self):
        if self.failures:
            sys.exit(f"{len(self.failures)} checks failed")
        print(f"{self.name}: all checks passed")


def run_harness(script, build_dir, tmp, *flags):
    """Runs `script --smoke` with the binaries in build_dir, its runs and
    teacher cache under tmp, docs untouched. Returns (stdout, results.json as
    a dict, the run folder); exits naming the script when it fails."""
    out = os.path.join(tmp, "run")
    proc = subprocess.run(
        [sys.executable, script, "--smoke", "--no_build", "--no_docs",
         "--build_dir", build_dir, "--out", out, "--cache_dir", os.path.join(tmp, "cache"),
         *flags],
        capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        sys.exit(f"{os.path.basename(script)} --smoke exited with {proc.returncode}")
    with open(os.path.join(out, "results.json")) as f:
        return proc.stdout, json.load(f), out
