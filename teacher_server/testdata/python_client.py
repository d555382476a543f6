#!/usr/bin/env python3
"""An independent client of the teacher service, built from teacher.proto.

Generates Python stubs with grpc_tools.protoc into a temporary directory,
calls Info and Distill on a running teacher_server and compares what it gets
with what the C++ client got for the same requests (serialized messages in
--cases: N.header.bin, N.batch.bin, N.response.bin). Tensors are decoded
here with numpy from the raw little-endian bytes. Exits 1 on any mismatch.
"""
import argparse
import importlib
import os
import sys
import tempfile

import numpy as np


def generate_stubs(proto_dir, out_dir):
    from grpc_tools import protoc
    import grpc_tools
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
            os.path.join(proto_dir, "teacher.proto")]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on teacher.proto")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("teacher_pb2"),
            importlib.import_module("teacher_pb2_grpc"))


def serve_on_loopback(pb2_grpc, servicer, port_file, options=()):
    """Serves `servicer` as a Teacher on a free 127.0.0.1 port without
    message limits (and with the gRPC channel `options` given), writes
    "<port>\\n" to `port_file` atomically once it serves, and blocks until
    the process is killed."""
    from concurrent import futures
    import threading
    import grpc
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_send_message_length", -1),
                                  ("grpc.max_receive_message_length", -1),
                                  *options])
    pb2_grpc.add_TeacherServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)
    threading.Event().wait()


def to_array(pb2, tensor):
    dtypes = {pb2.Tensor.FLOAT32: "<f4", pb2.Tensor.FLOAT16: "<f2",
              pb2.Tensor.INT32: "<i4", pb2.Tensor.INT64: "<i8",
              pb2.Tensor.UINT8: "u1"}
    return np.frombuffer(tensor.data, dtype=dtypes[tensor.dtype]).reshape(
        tuple(tensor.shape))


def read(message, path):
    with open(path, "rb") as f:
        message.ParseFromString(f.read())
    return message


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto_dir", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--info", required=True)
    parser.add_argument("--cases", required=True)
    args = parser.parse_args()

    import grpc
    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = generate_stubs(args.proto_dir, out_dir)
        channel = grpc.insecure_channel(
            args.address, options=[("grpc.max_receive_message_length", -1)])
        stub = pb2_grpc.TeacherStub(channel)

        info = stub.Info(pb2.InfoRequest(), timeout=30)
        if info != read(pb2.InfoResponse(), args.info):
            sys.exit(f"Info differs from the C++ client's:\n{info}")
        print(f"info: {info.model_name} classes={info.num_classes} "
              f"input={list(info.input_shape)} hash={info.model_hash[:12]}")

        failures = 0
        n = 0
        while os.path.exists(os.path.join(args.cases, f"{n}.header.bin")):
            base = os.path.join(args.cases, str(n))
            header = read(pb2.DistillRequest(), base + ".header.bin")
            batch = read(pb2.DistillRequest(), base + ".batch.bin")
            want = read(pb2.DistillResponse(), base + ".response.bin")
            got = list(stub.Distill(iter([header, batch]), timeout=30))
            name = pb2.Encoding.Name(header.header.encoding)
            if len(got) != 1 or got[0].batch_id != want.batch_id:
                print(f"case {n} {name}: wrong answers {got}")
                failures += 1
                n += 1
                continue
            g, w = got[0].targets, want.targets
            if (g.temperature, g.encoding, g.num_classes) != (
                    w.temperature, w.encoding, w.num_classes):
                print(f"case {n} {name}: header fields differ")
                failures += 1
            if header.header.encoding == pb2.TOP_K:
                same_indices = np.array_equal(to_array(pb2, g.topk_indices),
                                              to_array(pb2, w.topk_indices))
                diff = max(
                    np.abs(to_array(pb2, g.topk_values).astype(np.float64) -
                           to_array(pb2, w.topk_values)).max(),
                    np.abs(to_array(pb2, g.tail_mass).astype(np.float64) -
                           to_array(pb2, w.tail_mass)).max())
                ok = same_indices and diff <= 1e-6
            else:
                gp = to_array(pb2, g.probs).astype(np.float64)
                wp = to_array(pb2, w.probs).astype(np.float64)
                ok = gp.shape == wp.shape
                diff = np.abs(gp - wp).max() if ok else float("inf")
                ok = ok and diff <= 1e-6
                rows = gp.sum(axis=-1)
                tol = 1e-5 if header.header.encoding == pb2.DENSE_FP32 else 1e-2
                ok = ok and np.all(np.abs(rows - 1) <= tol)
            print(f"case {n} {name}: {'OK' if ok else 'MISMATCH'} "
                  f"(max |diff| {diff:g})")
            failures += 0 if ok else 1
            n += 1
        if n == 0:
            sys.exit("no cases found")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
