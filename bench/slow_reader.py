#!/usr/bin/env python3
"""The slow-reader attack on a teacher_server, measured.

S streams each send B batches of R zero images [R, 1, 28, 28] and never
read an answer (a client written from teacher.proto alone); meanwhile a
well-behaved client sends one small batch every second and times its
answer. Prints the server's peak RSS (from /proc, by --server_pid), how many
attack batches the server let in (flow control stops a sender the server no
longer reads), and the good client's worst latency, during the attack and
after it is cancelled.

usage: slow_reader.py --proto_dir DIR --address HOST:PORT --server_pid PID
           [--streams 8] [--batches 80] [--rows 512] [--seconds 30]
"""
import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "teacher_server", "testdata"))
from python_client import generate_stubs  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto_dir", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--server_pid", type=int, required=True)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--batches", type=int, default=80)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    import grpc
    out_dir = tempfile.mkdtemp()
    pb2, pb2_grpc = generate_stubs(a.proto_dir, out_dir)

    def tensor(images):
        return pb2.Tensor(dtype=pb2.Tensor.FLOAT32, shape=list(images.shape),
                          data=images.tobytes())

    header = pb2.DistillRequest(header=pb2.StreamHeader(
        temperature=2.0, encoding=pb2.DENSE_FP32))
    big = tensor(np.zeros((a.rows, 1, 28, 28), dtype="<f4"))
    small = tensor(np.zeros((2, 1, 28, 28), dtype="<f4"))
    sent = [0]
    lock = threading.Lock()

    def attack():
        yield header
        for i in range(a.batches):
            yield pb2.DistillRequest(batch=pb2.InputBatch(batch_id=i + 1,
                                                          inputs=big))
            with lock:
                sent[0] += 1

    def good_latency():
        channel = grpc.insecure_channel(
            a.address, options=[("grpc.use_local_subchannel_pool", 1)])
        start = time.monotonic()
        try:
            for _ in pb2_grpc.TeacherStub(channel).Distill(
                    iter([header, pb2.DistillRequest(batch=pb2.InputBatch(
                        batch_id=1, inputs=small))]), timeout=120):
                pass
        except grpc.RpcError as e:
            return float("inf"), e.code().name
        return time.monotonic() - start, "OK"

    base = rss_mb(a.server_pid)
    channel = grpc.insecure_channel(a.address)
    calls = [pb2_grpc.TeacherStub(channel).Distill(attack())
             for _ in range(a.streams)]
    peak, worst, codes = base, 0.0, set()
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        seconds, code = good_latency()
        worst, peak = max(worst, seconds), max(peak, rss_mb(a.server_pid))
        codes.add(code)
        time.sleep(1)
    print(f"server RSS before {base:.0f} MB, peak during the attack "
          f"{peak:.0f} MB")
    print(f"attack batches sent {sent[0]} of {a.streams * a.batches}")
    print(f"good client worst latency during the attack {worst:.2f} s "
          f"({', '.join(sorted(codes))})")
    for call in calls:
        call.cancel()
    after = [good_latency()[0] for _ in range(3)]
    print(f"good client latency after cancelling: "
          f"{', '.join(f'{s:.2f}' for s in after)} s; server RSS "
          f"{rss_mb(a.server_pid):.0f} MB")


if __name__ == "__main__":
    main()
