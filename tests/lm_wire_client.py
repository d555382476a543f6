#!/usr/bin/env python3
"""A client of a language-model teacher_server written from teacher.proto
alone (stubs generated with grpc_tools.protoc, tensors decoded with numpy).

Prints one line per check for the C++ test to read:
  info num_classes=V context_length=S input_dtype=INT32 tokenizer_sha256=HEX
  dense: shape=[2, S, V] max_row_error=E
  topk: k=K tail_error=E          (tail against the dense answer, in float64)
  index: encoding=INDEX_LOGP shape=[2, S, 32] max_logp_error=E tail_error=E
                          (at the 16 most and 16 least likely ids of each
                           position, chosen here, shuffled, in a TOP_K
                           stream: against the log of the dense answer)
  index chunked: chunks=N equal=True  (an INDEX_LOGP stream, 10 positions a
                                       chunk, joined here)
  repeated index: INVALID_ARGUMENT <message>
  bad id V: INVALID_ARGUMENT <message>
  bad id -1: INVALID_ARGUMENT <message>
  wrong dtype: INVALID_ARGUMENT <message>
  chunked: chunks=N rows=[...] equal=True   (10 positions a chunk, joined
                                             here, against the dense answer)
  tiny chunks: INVALID_ARGUMENT <message>
  hidden: hidden_size=H pages=P sha_ok=True shape=[2, S, H] max_kl=E
                          (the head paged in 100 rows at a time, hashed
                           here; softmax(hidden @ W^T) against the dense
                           answer)
  head row V: INVALID_ARGUMENT <message>
Exits 1 when a call that must succeed does not.

usage: lm_wire_client.py --proto_dir DIR --address HOST:PORT
"""
import argparse
import hashlib
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "teacher_server", "testdata"))
from python_client import generate_stubs, to_array  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto_dir", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--top_k", type=int, default=8)
    a = p.parse_args()
    import grpc
    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = generate_stubs(a.proto_dir, out_dir)
        stub = pb2_grpc.TeacherStub(grpc.insecure_channel(
            a.address, options=[("grpc.max_receive_message_length", -1)]))
        info = stub.Info(pb2.InfoRequest(), timeout=30)
        vocab, seq = info.num_classes, info.context_length
        print(f"info num_classes={vocab} context_length={seq} "
              f"input_dtype={pb2.Tensor.DType.Name(info.input_dtype)} "
              f"tokenizer_sha256={info.tokenizer_sha256}", flush=True)

        def tensor(ids, dtype=pb2.Tensor.INT32):
            width = "<i4" if dtype == pb2.Tensor.INT32 else "<i8"
            return pb2.Tensor(dtype=dtype, shape=list(ids.shape),
                              data=ids.astype(width).tobytes())

        def call(encoding, inputs, k=0, max_answer_bytes=0, samples=0,
                 indices=None):
            batch = pb2.InputBatch(batch_id=7, inputs=inputs)
            if indices is not None:
                batch.indices.CopyFrom(indices)
            requests = [
                pb2.DistillRequest(header=pb2.StreamHeader(
                    temperature=1.0, encoding=encoding, top_k=k,
                    max_answer_bytes=max_answer_bytes, samples=samples)),
                pb2.DistillRequest(batch=batch)]
            return list(stub.Distill(iter(requests), timeout=60))

        rng = np.random.default_rng(5)
        ids = rng.integers(0, vocab, size=(2, seq))
        dense = call(pb2.DENSE_FP32, tensor(ids))[0].targets
        probs = to_array(pb2, dense.probs).astype(np.float64)
        print(f"dense: shape={list(probs.shape)} "
              f"max_row_error={np.abs(probs.sum(-1) - 1).max():.3g}", flush=True)
        top = call(pb2.TOP_K, tensor(ids), a.top_k)[0].targets
        indices = to_array(pb2, top.topk_indices)
        tail = to_array(pb2, top.tail_mass).astype(np.float64)
        listed = np.take_along_axis(probs, indices.astype(np.int64), -1)
        want = probs.sum(-1) - listed.sum(-1)
        print(f"topk: k={indices.shape[-1]} "
              f"tail_error={np.abs(tail - want).max():.3g}", flush=True)

        # Ids this client chose: each position's 16 most and 16 least likely
        # (by the dense answer), shuffled.
        order = np.argsort(probs, -1)
        chosen = rng.permuted(np.concatenate([order[..., :16], order[..., -16:]],
                                             -1), axis=-1)
        answer = call(pb2.TOP_K, tensor(ids), a.top_k,
                      indices=tensor(chosen))[0].targets
        logp = to_array(pb2, answer.index_logp).astype(np.float64)
        at = np.take_along_axis(probs, chosen, -1)
        itail = to_array(pb2, answer.tail_mass).astype(np.float64)
        print(f"index: encoding={pb2.Encoding.Name(answer.encoding)} "
              f"shape={list(logp.shape)} "
              f"max_logp_error={np.abs(logp - np.log(at)).max():.3g} "
              f"tail_error={np.abs(itail - (probs.sum(-1) - at.sum(-1))).max():.3g}",
              flush=True)
        parts = call(pb2.INDEX_LOGP, tensor(ids), indices=tensor(chosen),
                     max_answer_bytes=4096 + 10 * (4 * 32 + 4))
        joined = np.concatenate([to_array(pb2, c.targets.index_logp)
                                 for c in parts]).reshape(logp.shape)
        print(f"index chunked: chunks={len(parts)} "
              f"equal={np.array_equal(joined, logp.astype(np.float32))}",
              flush=True)
        twice = chosen.copy()
        twice[0, 5, 1] = twice[0, 5, 0]
        try:
            call(pb2.TOP_K, tensor(ids), a.top_k, indices=tensor(twice))
            print("repeated index: answered", flush=True)
        except grpc.RpcError as e:
            print(f"repeated index: {e.code().name} {e.details()}", flush=True)

        # m draws per position: counts sum to m, and over all positions the
        # drawn frequencies of each id are its summed probability within a
        # few standard errors (z, with 1/m added to each variance).
        m = 32
        sampled = call(pb2.SAMPLED, tensor(ids), samples=m)[0].targets
        sid = to_array(pb2, sampled.sample_ids).astype(np.int64)
        counts = to_array(pb2, sampled.sample_counts).astype(np.float64)
        drawn = np.zeros(probs.shape)
        np.add.at(drawn, (np.arange(2)[:, None, None],
                          np.arange(seq)[None, :, None], sid), counts)
        est, want_p = drawn.sum((0, 1)) / m, probs.sum((0, 1))
        var = (probs * (1 - probs)).sum((0, 1)) / m + 1.0 / m
        print(f"sampled: m={sampled.samples} width={sid.shape[-1]} "
              f"sums_ok={bool((counts.sum(-1) == m).all())} "
              f"max_z={np.max(np.abs(est - want_p) / np.sqrt(var)):.3g}",
              flush=True)

        def refused(what, inputs):
            try:
                call(pb2.DENSE_FP32, inputs)
                print(f"{what}: answered", flush=True)
            except grpc.RpcError as e:
                print(f"{what}: {e.code().name} {e.details()}", flush=True)

        for bad in (vocab, -1):
            wrong = ids.copy()
            wrong[1, 3] = bad
            refused(f"bad id {bad}", tensor(wrong))
        refused("wrong dtype", tensor(ids, pb2.Tensor.INT64))

        # Ten positions of 4 x V bytes per chunk, plus the 4 KiB of framing
        # the proto allows.
        chunks = call(pb2.DENSE_FP32, tensor(ids),
                      max_answer_bytes=4096 + 10 * 4 * vocab)
        rows = [to_array(pb2, c.targets.probs) for c in chunks]
        joined = np.concatenate(rows).reshape(tuple(chunks[0].rows_shape) + (vocab,))
        order = [c.chunk for c in chunks] == list(range(chunks[0].chunks))
        print(f"chunked: chunks={len(chunks)} rows={[r.shape[0] for r in rows]} "
              f"equal={order and np.array_equal(joined, probs.astype(np.float32))}",
              flush=True)
        try:
            call(pb2.DENSE_FP32, tensor(ids), max_answer_bytes=100)
            print("tiny chunks: answered", flush=True)
        except grpc.RpcError as e:
            print(f"tiny chunks: {e.code().name} {e.details()}", flush=True)

        # The head in pages of 100 rows, then the teacher's distribution
        # computed here from the hidden states alone.
        width = info.hidden_size
        pages, row = [], 0
        while row < vocab:
            page = stub.OutputHead(pb2.OutputHeadRequest(
                first_row=row, max_bytes=4096 + 100 * 4 * (width + 1)),
                timeout=30)
            pages.append(page)
            row += page.weight.shape[0]
        weight = np.concatenate([to_array(pb2, q.weight) for q in pages])
        digest = hashlib.sha256(weight.astype("<f4").tobytes()).hexdigest()
        hidden = to_array(pb2, call(pb2.HIDDEN_FP16, tensor(ids))[0]
                          .targets.hidden).astype(np.float64)
        z = hidden @ weight.astype(np.float64).T * pages[0].logit_scale
        z -= z.max(-1, keepdims=True)
        mine = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        kl = (probs * (np.log(probs) - np.log(mine))).sum(-1).max()
        print(f"hidden: hidden_size={width} pages={len(pages)} "
              f"sha_ok={all(q.sha256 == digest for q in pages)} "
              f"shape={list(hidden.shape)} max_kl={kl:.3g}", flush=True)
        try:
            stub.OutputHead(pb2.OutputHeadRequest(first_row=vocab), timeout=30)
            print(f"head row {vocab}: answered", flush=True)
        except grpc.RpcError as e:
            print(f"head row {vocab}: {e.code().name} {e.details()}",
                  flush=True)


if __name__ == "__main__":
    main()
