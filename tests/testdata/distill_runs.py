"""Running `distill` from the Python interop tests."""
import json
import os
import shutil
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


def prepare_licence_tokens(prepare, workdir, vocab_size):
    """Tokenizes the licence texts every Debian system has with
    `distill_prepare_text`; returns the token folder."""
    corpus = os.path.join(workdir, "corpus")
    os.makedirs(corpus)
    for name in ("GPL-3", "Apache-2.0", "GPL-2", "LGPL-2.1"):
        shutil.copy(os.path.join("/usr/share/common-licenses", name), corpus)
    data = os.path.join(workdir, "tokens")
    subprocess.run([prepare, "--corpus", corpus, "--out_dir", data,
                    "--vocab_size", str(vocab_size)], check=True, capture_output=True)
    return data
