#!/usr/bin/env python3
"""A teacher server that dies mid-answer, written from teacher.proto alone.

It forwards Info and each Distill stream to a real teacher_server
(--upstream), passes the answers' chunks through, and after the first chunk
of the stream's first chunked answer ends the stream with UNAVAILABLE, as a
server killed while sending would. Info is the upstream's own, so a client
takes both for replicas of one teacher. Writes its port to --port_file once
serving, and one line "cut batch B after chunk 0 of N" to stdout per cut.

usage: lm_cutting_proxy.py --proto_dir DIR --upstream HOST:PORT --port_file F
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "teacher_server", "testdata"))
from python_client import generate_stubs, serve_on_loopback  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto_dir", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--port_file", required=True)
    a = p.parse_args()
    import grpc
    out_dir = tempfile.mkdtemp()
    pb2, pb2_grpc = generate_stubs(a.proto_dir, out_dir)
    # Imported: the generated files are not needed again, and this process
    # ends by a signal, with no chance to clean up later.
    shutil.rmtree(out_dir)
    upstream = pb2_grpc.TeacherStub(grpc.insecure_channel(
        a.upstream, options=[("grpc.max_receive_message_length", -1)]))

    class Cutting(pb2_grpc.TeacherServicer):
        def Info(self, request, context):
            return upstream.Info(request, timeout=30)

        def Distill(self, request_iterator, context):
            answers = upstream.Distill(request_iterator)
            for answer in answers:
                yield answer
                if answer.chunks > 1:
                    print(f"cut batch {answer.batch_id} after chunk "
                          f"{answer.chunk} of {answer.chunks}", flush=True)
                    answers.cancel()
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  "killed in the middle of an answer")

    serve_on_loopback(pb2_grpc, Cutting(), a.port_file)


if __name__ == "__main__":
    main()
