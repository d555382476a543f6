"""Running `distill` from the Python interop tests."""
import json
import os
import subprocess
import sys


def run(distill, config_text, run_dir, workdir):
    """Writes the config beside the run, runs it quietly, returns summary.json."""
    config = os.path.join(workdir, os.path.basename(run_dir) + ".pbtxt")
    with open(config, "w") as f:
        f.write(config_text)
    proc = subprocess.run([distill, "--quiet", "--config", config, "--run_dir", run_dir],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"distill failed ({proc.returncode}): {proc.stderr}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)
