#!/usr/bin/env python3
"""A hostile client of teacher_server, written from teacher.proto alone.

--connections N: opens N TCP connections to the server and holds them
without a word of HTTP/2 (each costs the server a descriptor), then calls
Info on a fresh channel; closes them and calls Info again. Prints:
  info with N idle connections: OK | <status code> <details>
  info after closing them: OK | <status code> <details>
Exits 1 when it cannot open the connections itself.

--retry_seconds S: calls Info after closing them until it is OK or S
seconds have passed.

usage: hostile_client.py --proto_dir DIR --address HOST:PORT --connections N
                         [--retry_seconds S]
"""
import argparse
import os
import resource
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "teacher_server", "testdata"))
from python_client import generate_stubs  # noqa: E402


def info(pb2, pb2_grpc, address):
    import grpc
    with grpc.insecure_channel(address) as channel:
        try:
            pb2_grpc.TeacherStub(channel).Info(pb2.InfoRequest(), timeout=10)
            return "OK"
        except grpc.RpcError as e:
            return f"{e.code().name} {e.details()}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto_dir", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--retry_seconds", type=float, default=0)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections + 256
    if soft < want:
        if hard < want:
            sys.exit(f"this client may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    host, port = a.address.rsplit(":", 1)
    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = generate_stubs(a.proto_dir, out_dir)
        held = [socket.create_connection((host, int(port)), timeout=10)
                for _ in range(a.connections)]
        print(f"info with {len(held)} idle connections: "
              f"{info(pb2, pb2_grpc, a.address)}", flush=True)
        for s in held:
            s.close()
        # The server frees their descriptors as it reads each close; the
        # first Info after may still find none free. Retried until OK or
        # --retry_seconds pass (0: once).
        deadline = time.monotonic() + a.retry_seconds
        after = info(pb2, pb2_grpc, a.address)
        while after != "OK" and time.monotonic() < deadline:
            after = info(pb2, pb2_grpc, a.address)
        print(f"info after closing them: {after}", flush=True)


if __name__ == "__main__":
    main()
