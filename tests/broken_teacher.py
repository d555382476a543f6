#!/usr/bin/env python3
"""A teacher server that lies, written from teacher.proto alone.

It answers Info like a Fashion-MNIST teacher (10 classes, [1, 28, 28] float
inputs) and then misbehaves on Distill in one way, chosen by --lie:

  internal    ends every stream with INTERNAL at its first batch
  unknown_id  answers each batch under an id that was never sent
  silent      reads every batch and never answers
  zeros       answers dense rows of zeros (not distributions)
  wrong_rank  answers [N, 1, 10] probabilities for [N] samples
  flood       answers in 32 chunks of 4.8 KB each, whatever the batch
  huge        answers each batch in one 64 MB message
  stall       never reads a stream's requests (nor answers): with the
              flow-control window kept at 64 KB, the client's writes of
              larger batches block until the stream is cancelled

or, with --vocab V --seq S --tokenizer_sha256 HEX, like a language model
offering HIDDEN_FP16 (H = 8) and then:

  head_hash   sends its output head under a hash the head does not have
  hidden_wide says its hidden states are V wide (no smaller than dense)
  hidden_nan  sends an honest head, then hidden states of NaN
or like a language model offering TOP_K and INDEX_LOGP, answering batches
without indices with a uniform top-k, and those with indices:
  index_ignored  in TOP_K form, as if it had not read them
  index_positive with log-probabilities of +0.5
  index_short    with one log-probability fewer per row than ids sent
  index_hidden   (offers TOP_K only) honestly, though Info does not say so

Writes its port to --port_file once it serves, and serves until killed.
Prints one line per batch it received to stdout (for the test to count).

usage: broken_teacher.py --proto_dir DIR --lie MODE --port_file FILE
                         [--vocab V --seq S --tokenizer_sha256 HEX]
"""
import hashlib
import argparse
import os
import shutil
import sys
import tempfile
import threading

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "teacher_server", "testdata"))
from python_client import generate_stubs, serve_on_loopback  # noqa: E402

CLASSES = 10


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto_dir", required=True)
    p.add_argument("--lie", required=True,
                   choices=["internal", "unknown_id", "silent", "zeros",
                            "wrong_rank", "flood", "huge", "stall",
                            "head_hash", "hidden_wide", "hidden_nan",
                            "index_ignored", "index_positive", "index_short",
                            "index_hidden"])
    p.add_argument("--port_file", required=True)
    p.add_argument("--vocab", type=int, default=0)
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--tokenizer_sha256", default="")
    a = p.parse_args()
    indexed = a.lie.startswith("index_")
    language_model = indexed or a.lie in ("head_hash", "hidden_wide",
                                          "hidden_nan")
    if language_model and (a.vocab < 2 or a.seq < 1 or not a.tokenizer_sha256):
        p.error(f"--lie {a.lie} needs --vocab, --seq and --tokenizer_sha256")
    width = a.vocab if a.lie == "hidden_wide" else 8
    head = np.random.default_rng(1).standard_normal(
        (max(a.vocab, 1), width)).astype("<f4")
    import grpc

    out_dir = tempfile.mkdtemp()
    pb2, pb2_grpc = generate_stubs(a.proto_dir, out_dir)
    # Imported: the generated files are not needed again, and this process
    # ends by a signal, with no chance to clean up later.
    shutil.rmtree(out_dir)
    lock = threading.Lock()

    def floats(array):
        array = np.ascontiguousarray(array, dtype="<f4")
        return pb2.Tensor(dtype=pb2.Tensor.FLOAT32, shape=list(array.shape),
                          data=array.tobytes())

    def index_answer(batch, n, temperature, top_k):
        targets = pb2.SoftTargets(temperature=temperature,
                                  num_classes=a.vocab)
        k = batch.indices.shape[-1] if batch.HasField("indices") else 0
        if k == 0 or a.lie == "index_ignored":
            k = top_k
            values = np.full((n, a.seq, k), 1.0 / a.vocab, dtype="<f2")
            ids = np.broadcast_to(np.arange(k, dtype="<i4"), (n, a.seq, k))
            targets.encoding = pb2.TOP_K
            targets.topk_values.CopyFrom(pb2.Tensor(
                dtype=pb2.Tensor.FLOAT16, shape=[n, a.seq, k],
                data=values.tobytes()))
            targets.topk_indices.CopyFrom(pb2.Tensor(
                dtype=pb2.Tensor.INT32, shape=[n, a.seq, k],
                data=np.ascontiguousarray(ids).tobytes()))
            targets.tail_mass.CopyFrom(floats(
                np.full((n, a.seq), 1 - k / a.vocab)))
            return targets
        width = k - 1 if a.lie == "index_short" else k
        logp = np.full((n, a.seq, width), -np.log(a.vocab))
        if a.lie == "index_positive":
            logp[:] = 0.5
        targets.encoding = pb2.INDEX_LOGP
        targets.index_logp.CopyFrom(floats(logp))
        targets.tail_mass.CopyFrom(floats(
            np.full((n, a.seq), 1 - width / a.vocab)))
        return targets

    class Liar(pb2_grpc.TeacherServicer):
        def Info(self, request, context):
            if indexed:
                offered = [pb2.TOP_K]
                if a.lie != "index_hidden":
                    offered.append(pb2.INDEX_LOGP)
                return pb2.InfoResponse(
                    model_name="liar", model_hash="0" * 64,
                    input_shape=[a.seq], input_dtype=pb2.Tensor.INT32,
                    output_shape=[a.seq, a.vocab], num_classes=a.vocab,
                    max_batch=1024, encodings=offered,
                    max_request_bytes=64 << 20,
                    tokenizer_sha256=a.tokenizer_sha256,
                    context_length=a.seq)
            if language_model:
                return pb2.InfoResponse(
                    model_name="liar", model_hash="0" * 64,
                    input_shape=[a.seq], input_dtype=pb2.Tensor.INT32,
                    output_shape=[a.seq, a.vocab], num_classes=a.vocab,
                    max_batch=1024, encodings=[pb2.HIDDEN_FP16],
                    max_request_bytes=64 << 20,
                    tokenizer_sha256=a.tokenizer_sha256,
                    context_length=a.seq, hidden_size=width)
            return pb2.InfoResponse(
                model_name="liar", model_hash="0" * 64,
                input_shape=[1, 28, 28], input_dtype=pb2.Tensor.FLOAT32,
                output_shape=[CLASSES], num_classes=CLASSES, max_batch=1024,
                encodings=[pb2.DENSE_FP32, pb2.DENSE_FP16, pb2.TOP_K],
                max_request_bytes=64 << 20)

        def OutputHead(self, request, context):
            honest = hashlib.sha256(head.tobytes()).hexdigest()
            # As many rows as the request has room for (teacher.proto).
            budget = min(request.max_bytes or 1 << 20, 4 << 20)
            fit = max(1, (budget - 4096) // (4 * (width + 1)))
            rows = head[request.first_row:request.first_row + fit]
            return pb2.OutputHeadPage(
                vocab_size=a.vocab, hidden_size=width, logit_scale=1.0,
                sha256="f" * 64 if a.lie == "head_hash" else honest,
                first_row=request.first_row, weight=floats(rows))

        def Distill(self, request_iterator, context):
            if a.lie == "stall":
                ended = threading.Event()
                context.add_callback(ended.set)
                with lock:
                    print("stream", flush=True)
                ended.wait()
                return
            temperature, top_k = 1.0, 1
            for request in request_iterator:
                if request.WhichOneof("kind") == "header":
                    temperature = request.header.temperature
                    top_k = max(1, request.header.top_k)
                    continue
                batch = request.batch
                n = batch.inputs.shape[0]
                with lock:
                    print(f"batch {batch.batch_id} rows {n}", flush=True)
                if a.lie == "internal":
                    context.abort(grpc.StatusCode.INTERNAL, "liar: internal")
                if a.lie == "silent":
                    continue
                if indexed:
                    yield pb2.DistillResponse(
                        batch_id=batch.batch_id,
                        targets=index_answer(batch, n, temperature, top_k))
                    continue
                if a.lie == "hidden_nan":
                    nan = np.full((n, a.seq, width), np.nan, dtype="<f2")
                    yield pb2.DistillResponse(
                        batch_id=batch.batch_id,
                        targets=pb2.SoftTargets(
                            temperature=temperature,
                            encoding=pb2.HIDDEN_FP16, num_classes=a.vocab,
                            hidden=pb2.Tensor(dtype=pb2.Tensor.FLOAT16,
                                              shape=list(nan.shape),
                                              data=nan.tobytes())))
                    continue
                targets = pb2.SoftTargets(temperature=temperature,
                                          encoding=pb2.DENSE_FP32,
                                          num_classes=CLASSES)
                uniform = np.full((n, CLASSES), 1.0 / CLASSES)
                if a.lie == "flood":
                    big = floats(np.zeros((1, 1200)))
                    for chunk in range(32):
                        yield pb2.DistillResponse(
                            batch_id=batch.batch_id,
                            targets=pb2.SoftTargets(
                                temperature=temperature,
                                encoding=pb2.DENSE_FP32,
                                num_classes=CLASSES, probs=big),
                            chunk=chunk, chunks=32, first_row=chunk,
                            rows_shape=[n])
                    continue
                if a.lie == "huge":
                    targets.probs.CopyFrom(floats(np.zeros((1, 16 << 20))))
                elif a.lie == "zeros":
                    targets.probs.CopyFrom(floats(np.zeros((n, CLASSES))))
                elif a.lie == "wrong_rank":
                    targets.probs.CopyFrom(floats(uniform.reshape(n, 1, -1)))
                else:
                    targets.probs.CopyFrom(floats(uniform))
                answer_id = batch.batch_id
                if a.lie == "unknown_id":
                    answer_id += 1000
                yield pb2.DistillResponse(batch_id=answer_id, targets=targets)

    # Without BDP probing the server's flow-control window stays at 64 KB.
    options = [("grpc.http2.bdp_probe", 0)] if a.lie == "stall" else []
    serve_on_loopback(pb2_grpc, Liar(), a.port_file, options)


if __name__ == "__main__":
    main()
