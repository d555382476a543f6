#include "teacher_server/chunks.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "teacher_server/packed_topk.h"

namespace distill::teacher {
namespace {

// The row-major tensors of an answer, the first one's leading dimensions
// being the rows: probs, or top-k values, indices and tail.
std::vector<v1::Tensor*> RowTensors(v1::SoftTargets& t) {
  if (t.encoding() == v1::TOP_K_PACKED) {
    return {t.mutable_topk_packed(), t.mutable_tail_mass()};
  }
  if (t.encoding() == v1::TOP_K) {
    return {t.mutable_topk_values(), t.mutable_topk_indices(),
            t.mutable_tail_mass()};
  }
  if (t.encoding() == v1::SAMPLED) {
    return {t.mutable_sample_ids(), t.mutable_sample_counts()};
  }
  if (t.encoding() == v1::INDEX_LOGP) {
    return {t.mutable_index_logp(), t.mutable_tail_mass()};
  }
  if (t.encoding() == v1::HIDDEN_FP16) return {t.mutable_hidden()};
  return {t.mutable_probs()};
}

std::vector<const v1::Tensor*> RowTensors(const v1::SoftTargets& t) {
  if (t.encoding() == v1::TOP_K_PACKED) {
    return {&t.topk_packed(), &t.tail_mass()};
  }
  if (t.encoding() == v1::TOP_K) {
    return {&t.topk_values(), &t.topk_indices(), &t.tail_mass()};
  }
  if (t.encoding() == v1::SAMPLED) {
    return {&t.sample_ids(), &t.sample_counts()};
  }
  if (t.encoding() == v1::INDEX_LOGP) {
    return {&t.index_logp(), &t.tail_mass()};
  }
  if (t.encoding() == v1::HIDDEN_FP16) return {&t.hidden()};
  return {&t.probs()};
}

// Whether `tensor` is a per-row scalar (the top-k tail) rather than rows of
// a last dimension.
bool IsTail(const v1::SoftTargets& t, int index) {
  return (t.encoding() == v1::TOP_K && index == 2) ||
         (t.encoding() == v1::TOP_K_PACKED && index == 1) ||
         (t.encoding() == v1::INDEX_LOGP && index == 1);
}

// Bytes per element of a wire dtype; 0 for none.
int64_t ElementBytes(v1::Tensor::DType dtype) {
  switch (dtype) {
    case v1::Tensor::FLOAT32:
    case v1::Tensor::INT32:
      return 4;
    case v1::Tensor::FLOAT16:
      return 2;
    case v1::Tensor::INT64:
      return 8;
    case v1::Tensor::UINT8:
      return 1;
    default:
      return 0;
  }
}

// An empty copy of `t` with its scalar fields.
v1::SoftTargets Scalars(const v1::SoftTargets& t) {
  v1::SoftTargets out;
  out.set_temperature(t.temperature());
  out.set_encoding(t.encoding());
  out.set_num_classes(t.num_classes());
  out.set_samples(t.samples());
  out.set_top_k(t.top_k());
  return out;
}

}  // namespace

int64_t RowBytes(v1::Encoding encoding, int64_t num_classes, int32_t width) {
  switch (encoding) {
    case v1::DENSE_FP32:
      return 4 * num_classes;
    case v1::DENSE_FP16:
    case v1::DENSE_LOGP_FP16:
      return 2 * num_classes;
    case v1::TOP_K:
      return 6 * static_cast<int64_t>(width) + 4;
    case v1::TOP_K_PACKED:
      return PackedRowBytes(width, num_classes) + 4;
    case v1::SAMPLED:
      return 5 * static_cast<int64_t>(width);
    case v1::HIDDEN_FP16:
      return 2 * static_cast<int64_t>(width);
    case v1::INDEX_LOGP:
      return 4 * static_cast<int64_t>(width) + 4;
    default:
      return 0;
  }
}

int64_t AnswerRows(const v1::SoftTargets& targets) {
  const v1::Tensor& first = *RowTensors(targets)[0];
  if (first.shape_size() < 1) return 0;
  int64_t rows = 1;
  for (int d = 0; d + 1 < first.shape_size(); ++d) rows *= first.shape(d);
  return rows;
}

absl::StatusOr<std::vector<v1::DistillResponse>> SplitAnswer(
    uint64_t batch_id, const v1::SoftTargets& targets, int64_t max_bytes) {
  std::vector<v1::DistillResponse> out(1);
  out[0].set_batch_id(batch_id);
  if (max_bytes <= 0 ||
      static_cast<int64_t>(targets.ByteSizeLong()) + kChunkFramingBytes <=
          max_bytes) {
    *out[0].mutable_targets() = targets;
    return out;
  }
  const std::vector<const v1::Tensor*> tensors = RowTensors(targets);
  const v1::Tensor& first = *tensors[0];
  if (first.shape_size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "answer of batch ", batch_id, " has no rows to split: shape [",
        absl::StrJoin(first.shape(), ", "), "]"));
  }
  std::vector<int64_t> rows_shape(first.shape().begin(),
                                  first.shape().end() - 1);
  int64_t rows = 1;
  for (int64_t d : rows_shape) rows *= d;
  int64_t row_bytes = 0;
  for (const v1::Tensor* t : tensors) {
    row_bytes += rows > 0 ? static_cast<int64_t>(t->data().size()) / rows : 0;
  }
  const int64_t per_chunk =
      (max_bytes - kChunkFramingBytes) / std::max<int64_t>(1, row_bytes);
  if (per_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("an answer chunk of at most ", max_bytes,
                     " bytes cannot hold one row of ", row_bytes, " bytes and ",
                     kChunkFramingBytes, " of framing"));
  }
  const int64_t count = (rows + per_chunk - 1) / per_chunk;
  out.assign(count, v1::DistillResponse());
  for (int64_t c = 0; c < count; ++c) {
    const int64_t start = c * per_chunk;
    const int64_t m = std::min(per_chunk, rows - start);
    v1::DistillResponse& chunk = out[c];
    chunk.set_batch_id(batch_id);
    chunk.set_chunk(static_cast<uint32_t>(c));
    chunk.set_chunks(static_cast<uint32_t>(count));
    chunk.set_first_row(start);
    for (int64_t d : rows_shape) chunk.add_rows_shape(d);
    v1::SoftTargets& part = *chunk.mutable_targets();
    part = Scalars(targets);
    std::vector<v1::Tensor*> parts = RowTensors(part);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const v1::Tensor& whole = *tensors[i];
      const int64_t bytes = static_cast<int64_t>(whole.data().size()) / rows;
      parts[i]->set_dtype(whole.dtype());
      parts[i]->add_shape(m);
      if (!IsTail(targets, static_cast<int>(i))) {
        parts[i]->add_shape(whole.shape(whole.shape_size() - 1));
      }
      parts[i]->set_data(whole.data().substr(start * bytes, m * bytes));
    }
  }
  return out;
}

absl::StatusOr<v1::DistillResponse> JoinAnswer(
    const std::vector<v1::DistillResponse>& chunks) {
  if (chunks.empty()) {
    return absl::InvalidArgumentError("an answer needs at least one chunk");
  }
  const v1::DistillResponse& head = chunks[0];
  const uint64_t id = head.batch_id();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("answer of batch ", id, " in chunks: ", what));
  };
  if (head.chunks() == 0) {
    if (chunks.size() != 1) return bad("a whole answer came with others");
    return head;
  }
  if (chunks.size() != head.chunks()) {
    return bad(absl::StrCat(chunks.size(), " chunks of the ", head.chunks(),
                            " announced"));
  }
  std::vector<int64_t> rows_shape(head.rows_shape().begin(),
                                  head.rows_shape().end());
  int64_t rows = rows_shape.empty() ? 0 : 1;
  for (int64_t d : rows_shape) {
    if (d < 0) return bad("negative rows_shape");
    if (__builtin_mul_overflow(rows, d, &rows)) {
      return bad(absl::StrCat("rows_shape [", absl::StrJoin(rows_shape, ", "),
                              "] is too large"));
    }
  }
  v1::DistillResponse out;
  out.set_batch_id(id);
  v1::SoftTargets& whole = *out.mutable_targets();
  whole = Scalars(head.targets());
  std::vector<v1::Tensor*> joined = RowTensors(whole);
  const std::vector<const v1::Tensor*> first = RowTensors(head.targets());
  int64_t next_row = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const v1::DistillResponse& chunk = chunks[c];
    const v1::SoftTargets& t = chunk.targets();
    if (chunk.batch_id() != id) {
      return bad(
          absl::StrCat("chunk ", c, " belongs to batch ", chunk.batch_id()));
    }
    if (chunk.chunk() != c || chunk.chunks() != head.chunks()) {
      return bad(absl::StrCat("chunk ", chunk.chunk(), " of ", chunk.chunks(),
                              " arrived in position ", c, " of ",
                              head.chunks()));
    }
    if (std::vector<int64_t>(chunk.rows_shape().begin(),
                             chunk.rows_shape().end()) != rows_shape ||
        chunk.first_row() != next_row) {
      return bad(absl::StrCat("chunk ", c, " starts at row ", chunk.first_row(),
                              " of [", absl::StrJoin(chunk.rows_shape(), ", "),
                              "]; expected row ", next_row, " of [",
                              absl::StrJoin(rows_shape, ", "), "]"));
    }
    if (t.encoding() != whole.encoding() ||
        t.temperature() != whole.temperature() ||
        t.num_classes() != whole.num_classes() ||
        t.samples() != whole.samples() || t.top_k() != whole.top_k()) {
      return bad(absl::StrCat("chunk ", c,
                              " disagrees with chunk 0 on the encoding, "
                              "temperature, class count, samples or k"));
    }
    const std::vector<const v1::Tensor*> parts = RowTensors(t);
    const int64_t m = parts[0]->shape_size() > 0 ? parts[0]->shape(0) : -1;
    if (m < 1) return bad(absl::StrCat("chunk ", c, " has no rows"));
    if (m > rows - next_row) {
      return bad(absl::StrCat("chunk ", c, " holds ", m, " rows from row ",
                              next_row, " of ", rows));
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      const bool tail = IsTail(t, static_cast<int>(i));
      // m * width * element size without overflow: the width is the
      // server's to claim.
      int64_t bytes = -1;
      const bool shape_ok =
          parts[i]->shape_size() == (tail ? 1 : 2) && parts[i]->shape(0) == m &&
          (tail || parts[i]->shape(1) == first[i]->shape(1)) &&
          parts[i]->dtype() == first[i]->dtype() &&
          !__builtin_mul_overflow(m, tail ? 1 : parts[i]->shape(1), &bytes) &&
          !__builtin_mul_overflow(bytes, ElementBytes(parts[i]->dtype()),
                                  &bytes) &&
          bytes >= 0 && static_cast<int64_t>(parts[i]->data().size()) == bytes;
      if (!shape_ok) {
        return bad(absl::StrCat("chunk ", c, " tensor ", i, " is [",
                                absl::StrJoin(parts[i]->shape(), ", "), "] of ",
                                parts[i]->data().size(),
                                " bytes; chunk 0's is [",
                                absl::StrJoin(first[i]->shape(), ", "), "]"));
      }
      joined[i]->mutable_data()->append(parts[i]->data());
    }
    next_row += m;
  }
  if (next_row != rows) {
    return bad(absl::StrCat("the chunks hold ", next_row, " rows of ", rows));
  }
  for (size_t i = 0; i < joined.size(); ++i) {
    joined[i]->set_dtype(first[i]->dtype());
    for (int64_t d : rows_shape) joined[i]->add_shape(d);
    if (!IsTail(whole, static_cast<int>(i))) {
      joined[i]->add_shape(first[i]->shape(1));
    }
  }
  return out;
}

}  // namespace distill::teacher
