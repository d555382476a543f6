"""TorchScript interop of `distill`, checked from Python PyTorch.

1. Python scripts a small CNN and saves it.
2. `distill` trains it as a student (TRAIN mode) and saves it back.
3. Python loads the result: the weights moved, and Python's accuracy on the
   same test images equals the accuracy `distill` reported.
4. `distill` then uses the trained TorchScript model as a teacher.

Exit 77 (skipped) when /usr/bin/python3 has no torch.
"""
import argparse
import gzip
import os
import shutil
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: python3 has no torch/numpy")
    sys.exit(77)

DATASET = "/usr/share/datasets/fashion-mnist"
TEST_LIMIT = 500
MEAN, STD = 0.2860, 0.3530

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "testdata"))
from distill_runs import run  # noqa: E402
from make_torchscript import SmallNet  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--distill", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="distill_ts_")

    torch.manual_seed(0)
    initial = SmallNet(10)
    scripted = torch.jit.script(initial)
    student_path = os.path.join(work, "student.ts.pt")
    scripted.save(student_path)

    summary = run(args.distill, f"""
mode: TRAIN
student {{ torchscript: "{student_path}" }}
data {{ train_limit: 3000 test_limit: {TEST_LIMIT} }}
epochs: 1 batch_size: 64 threads: 1 seed: 1
optimizer {{ lr: 0.05 }}
""", os.path.join(work, "student"), work)

    trained = torch.jit.load(os.path.join(work, "student", "model.torchscript.pt"))
    moved = [name for (name, p), (_, q) in
             zip(trained.named_parameters(), initial.named_parameters())
             if not torch.equal(p, q.detach())]
    assert len(moved) == len(list(initial.parameters())), \
        f"only {moved} changed: distill did not save the trained weights"

    images = read_idx(os.path.join(DATASET, "t10k-images-idx3-ubyte.gz"))[:TEST_LIMIT]
    labels = read_idx(os.path.join(DATASET, "t10k-labels-idx1-ubyte.gz"))[:TEST_LIMIT]
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - MEAN) / STD
    trained.eval()
    with torch.no_grad():
        pred = trained(x.unsqueeze(1)).argmax(1).numpy()
    python_acc = float((pred == labels).mean())
    cpp_acc = summary["test_accuracy"]
    print(f"accuracy reported by distill {cpp_acc:.4f}, recomputed in Python {python_acc:.4f}")
    assert abs(python_acc - cpp_acc) <= 1.0 / TEST_LIMIT, (python_acc, cpp_acc)
    assert python_acc > 0.5, f"trained model is near chance: {python_acc}"

    teacher_path = os.path.join(work, "student", "model.torchscript.pt")
    distilled = run(args.distill, f"""
mode: DISTILL
student {{ arch: "mlp" }}
teacher {{ model {{ torchscript: "{teacher_path}" }} }}
data {{ train_limit: 1000 test_limit: {TEST_LIMIT} }}
epochs: 1 batch_size: 100 threads: 1
""", os.path.join(work, "distilled"), work)
    assert "kd_kl" in distilled["loss_terms"], distilled
    assert distilled["teacher"] == "in-process torchscript:model.torchscript.pt", distilled
    print("ok: TorchScript student round trip and TorchScript teacher")
    shutil.rmtree(work)  # kept when an assertion fails, to look at


if __name__ == "__main__":
    main()
