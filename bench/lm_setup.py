"""What the language-model benchmarks start from: the quickstart's token
files and teacher, made here when the quickstart has not made them, and a
teacher_server serving that teacher."""
import contextlib
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "build", "bin")
DATA = os.path.join(REPO, "runs", "lm", "data")
QUICKSTART_TEACHER = os.path.join(REPO, "runs", "lm", "teacher", "model.pt")
# launch/configs/lm_teacher.pbtxt's architecture.
TEACHER_OPTIONS = "layers=4,heads=4,d_model=256,d_ff=1024,context=128"


def data_and_teacher(out, teacher_epochs, run, train, log):
    """Prepares runs/lm/data when it is missing and returns the teacher's
    weights: runs/lm/teacher/model.pt, else lm_teacher.pbtxt trained for
    `teacher_epochs` epochs into out/teacher. `run(cmd)` runs a command
    and `train(config_file)` a `distill` job, both exiting on failure."""
    if not os.path.exists(os.path.join(DATA, "train.tok")):
        log("preparing the corpus into runs/lm/data")
        run([os.path.join(BIN, "distill_prepare_text"), "--out_dir", DATA])
    if os.path.exists(QUICKSTART_TEACHER):
        return QUICKSTART_TEACHER
    log(f"training the teacher (launch/configs/lm_teacher.pbtxt, {teacher_epochs} epochs)")
    text = open(os.path.join(REPO, "launch", "configs", "lm_teacher.pbtxt")).read()
    text = re.sub(r'run_dir: "[^"]*"', f'run_dir: "{os.path.join(out, "teacher")}"', text)
    text = re.sub(r"\nepochs: \d+", f"\nepochs: {teacher_epochs}", text)
    file = os.path.join(out, "teacher.pbtxt")
    with open(file, "w") as f:
        f.write(text)
    train(file)
    return os.path.join(out, "teacher", "model.pt")


@contextlib.contextmanager
def teacher_server(weights, port_file, extra_args=()):
    """Serves the teacher `weights` on a loopback port for the `with` block
    and yields the port; the server is stopped at its end."""
    server = subprocess.Popen(
        [os.path.join(BIN, "teacher_server"), "--arch=gpt",
         f"--arch_options={TEACHER_OPTIONS}", f"--weights={weights}",
         "--input_shape=128", "--input_dtype=int32", "--num_classes=8192",
         f"--tokenizer={os.path.join(DATA, 'tokenizer.model')}",
         f"--port_file={port_file}", *extra_args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(port_file):
            if server.poll() is not None:
                sys.exit(f"teacher_server exited {server.returncode}")
            time.sleep(0.1)
        yield int(open(port_file).read())
    finally:
        server.terminate()
        server.wait()
