// Wire encoding of tensors and teacher targets.
//
// Bytes are little-endian on the wire; the copy below is a plain memcpy, so
// the build refuses big-endian hosts rather than silently byte-swapping.
#include "teacher_server/codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/temperature.h"
#include "common/torch_status.h"
#include "teacher_server/packed_topk.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the teacher wire format is little-endian");

namespace distill::teacher {
namespace {

absl::StatusOr<torch::Dtype> TorchDType(v1::Tensor::DType dtype) {
  switch (dtype) {
    case v1::Tensor::FLOAT32:
      return torch::kFloat;
    case v1::Tensor::FLOAT16:
      return torch::kHalf;
    case v1::Tensor::INT32:
      return torch::kInt;
    case v1::Tensor::INT64:
      return torch::kLong;
    case v1::Tensor::UINT8:
      return torch::kByte;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported tensor dtype ", DTypeName(dtype)));
  }
}

// InvalidArgument unless `t` is of `dtype`.
absl::Status CheckTensor(const v1::Tensor& t, absl::string_view what,
                         v1::Tensor::DType dtype) {
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be ", DTypeName(dtype), ", got ", DTypeName(t.dtype())));
  }
  return absl::OkStatus();
}

// OK when every row sum in `sums` (one per distribution) is within `tolerance`
// of 1; else InvalidArgument naming the first row that is not. A peer's rows
// of zeros would otherwise train with a loss of 0.
absl::Status CheckRowSums(const torch::Tensor& sums, double tolerance,
                          absl::string_view what) {
  if (sums.numel() == 0) return absl::OkStatus();
  const torch::Tensor deviation = (sums.reshape(-1) - 1).abs();
  const int64_t worst = deviation.argmax().item<int64_t>();
  if (!(deviation[worst].item<double>() <= tolerance)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must each sum to 1 (within ", tolerance, "); row ", worst,
        " sums to ", sums.reshape(-1)[worst].item<double>()));
  }
  return absl::OkStatus();
}

// Whether every value of float tensor `t` is finite and within [lo, hi].
bool AllWithin(const torch::Tensor& t, double lo, double hi) {
  if (t.numel() == 0) return true;
  return torch::isfinite(t).all().item<bool>() &&
         t.min().item<double>() >= lo && t.max().item<double>() <= hi;
}

// Half precision rounds 1 - epsilon up to 1 and loses ~1e-3 relative; the
// bounds allow for that, not for garbage.
constexpr double kProbSlack = 2e-3;

}  // namespace

std::string ShapeString(absl::Span<const int64_t> shape) {
  if (shape.size() <= static_cast<size_t>(kMaxTensorRank)) {
    return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  }
  return absl::StrCat("[",
                      absl::StrJoin(shape.subspan(0, kMaxTensorRank), ", "),
                      ", ... (", shape.size(), " dimensions)]");
}

bool IsTopK(v1::Encoding encoding) {
  return encoding == v1::TOP_K || encoding == v1::TOP_K_PACKED;
}

int64_t TopKWidth(const v1::SoftTargets& targets) {
  if (targets.encoding() == v1::TOP_K_PACKED) return targets.top_k();
  const v1::Tensor& values = targets.topk_values();
  return values.shape_size() < 1 ? -1 : values.shape(values.shape_size() - 1);
}

std::string EncodingName(v1::Encoding encoding) {
  return v1::Encoding_Name(encoding).empty()
             ? absl::StrCat("encoding ", static_cast<int>(encoding))
             : v1::Encoding_Name(encoding);
}

std::string DTypeName(v1::Tensor::DType dtype) {
  return v1::Tensor::DType_Name(dtype).empty()
             ? absl::StrCat("dtype ", static_cast<int>(dtype))
             : v1::Tensor::DType_Name(dtype);
}

absl::StatusOr<v1::Tensor::DType> WireDType(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat:
      return v1::Tensor::FLOAT32;
    case torch::kHalf:
      return v1::Tensor::FLOAT16;
    case torch::kInt:
      return v1::Tensor::INT32;
    case torch::kLong:
      return v1::Tensor::INT64;
    case torch::kByte:
      return v1::Tensor::UINT8;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor dtype ", c10::toString(dtype), " has no wire encoding"));
  }
}

v1::Tensor ToProto(const torch::Tensor& tensor, v1::Tensor::DType dtype) {
  // Only the five dtypes of the enum reach here (callers pass enum values).
  const torch::Tensor cpu =
      tensor.detach().to(torch::kCPU, *TorchDType(dtype)).contiguous();
  v1::Tensor message;
  message.set_dtype(dtype);
  for (int64_t d : cpu.sizes()) message.add_shape(d);
  message.set_data(static_cast<const char*>(cpu.data_ptr()), cpu.nbytes());
  return message;
}

absl::StatusOr<v1::Tensor> ToProto(const torch::Tensor& tensor) {
  DISTILL_ASSIGN_OR_RETURN(v1::Tensor::DType dtype,
                           WireDType(tensor.scalar_type()));
  return ToProto(tensor, dtype);
}

absl::StatusOr<torch::Tensor> FromProto(const v1::Tensor& message,
                                        absl::string_view what) {
  absl::StatusOr<torch::Dtype> dtype = TorchDType(message.dtype());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", dtype.status().message()));
  }
  std::vector<int64_t> shape(message.shape().begin(), message.shape().end());
  if (shape.size() > static_cast<size_t>(kMaxTensorRank)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " shape ", ShapeString(shape), " has more than ",
                     kMaxTensorRank, " dimensions"));
  }
  const int64_t element_size = c10::elementSize(*dtype);
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has a negative dimension in shape ", ShapeString(shape)));
    }
    if (d != 0 &&
        count > std::numeric_limits<int64_t>::max() / element_size / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " shape ", ShapeString(shape), " is too large"));
    }
    count *= d;
  }
  const int64_t expected_bytes = count * element_size;
  if (static_cast<int64_t>(message.data().size()) != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " carries ", message.data().size(), " bytes but ",
                     DTypeName(message.dtype()), " ", ShapeString(shape),
                     " needs ", expected_bytes));
  }
  torch::Tensor out = torch::empty(shape, torch::TensorOptions().dtype(*dtype));
  if (expected_bytes > 0) {
    std::memcpy(out.data_ptr(), message.data().data(), expected_bytes);
  }
  return out;
}

absl::StatusOr<v1::SoftTargets> EncodeTargets(
    const losses::TeacherTargets& targets, v1::Encoding encoding) {
  v1::SoftTargets message;
  message.set_temperature(targets.temperature);
  message.set_encoding(encoding);
  message.set_num_classes(targets.num_classes);
  const bool dense = targets.form == losses::TeacherTargets::Form::kDense;
  switch (encoding) {
    case v1::DENSE_FP32:
    case v1::DENSE_FP16:
      if (!dense) break;
      *message.mutable_probs() = ToProto(
          targets.probs, encoding == v1::DENSE_FP32 ? v1::Tensor::FLOAT32
                                                    : v1::Tensor::FLOAT16);
      return message;
    case v1::DENSE_LOGP_FP16:
      if (!dense) break;
      // log of float32 probabilities: exact to float rounding for every
      // normal float (p > 1.2e-38); 0 becomes -inf.
      *message.mutable_probs() =
          ToProto(targets.probs.to(torch::kFloat).log(), v1::Tensor::FLOAT16);
      return message;
    case v1::TOP_K:
      if (targets.form != losses::TeacherTargets::Form::kTopK) break;
      *message.mutable_topk_values() =
          ToProto(targets.values, v1::Tensor::FLOAT16);
      *message.mutable_topk_indices() =
          ToProto(targets.indices, v1::Tensor::INT32);
      *message.mutable_tail_mass() =
          ToProto(targets.tail_mass, v1::Tensor::FLOAT32);
      return message;
    case v1::TOP_K_PACKED:
      if (targets.form != losses::TeacherTargets::Form::kTopK) break;
      *message.mutable_topk_packed() = ToProto(
          PackTopK(targets.values, targets.indices, targets.num_classes),
          v1::Tensor::UINT8);
      message.set_top_k(static_cast<int32_t>(targets.values.size(-1)));
      *message.mutable_tail_mass() =
          ToProto(targets.tail_mass, v1::Tensor::FLOAT32);
      return message;
    case v1::HIDDEN_FP16:
      if (targets.form != losses::TeacherTargets::Form::kHidden) break;
      *message.mutable_hidden() = ToProto(targets.hidden, v1::Tensor::FLOAT16);
      return message;
    case v1::SAMPLED: {
      if (targets.form != losses::TeacherTargets::Form::kSampled) break;
      // Distinct ids fill each row from the left, so the columns past the
      // row with the most distinct ids hold only padding: not sent.
      const torch::Tensor counts =
          (targets.values * static_cast<double>(targets.samples)).round();
      const int64_t width = std::max<int64_t>(
          1,
          counts.numel() == 0 ? 1 : (counts > 0).sum(-1).max().item<int64_t>());
      *message.mutable_sample_ids() =
          ToProto(targets.indices.narrow(-1, 0, width), v1::Tensor::INT32);
      *message.mutable_sample_counts() =
          ToProto(counts.narrow(-1, 0, width), v1::Tensor::UINT8);
      message.set_samples(static_cast<int32_t>(targets.samples));
      return message;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot encode targets as ", EncodingName(encoding)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot encode ", losses::FormName(targets.form),
                   " targets as ", EncodingName(encoding)));
}

absl::StatusOr<v1::SoftTargets> EncodeAtIndices(const torch::Tensor& logits,
                                                double temperature,
                                                const torch::Tensor& indices) {
  torch::Tensor logp;
  DISTILL_ASSIGN_OR_RETURN(
      const losses::TeacherTargets targets,
      TorchCall("the teacher's log-probabilities at the batch's indices", [&] {
        return losses::TeacherTargets::AtIndices(logits, temperature, indices,
                                                 &logp);
      }));
  v1::SoftTargets message;
  message.set_temperature(temperature);
  message.set_encoding(v1::INDEX_LOGP);
  message.set_num_classes(targets.num_classes);
  *message.mutable_index_logp() = ToProto(logp, v1::Tensor::FLOAT32);
  *message.mutable_tail_mass() =
      ToProto(targets.tail_mass, v1::Tensor::FLOAT32);
  return message;
}

absl::StatusOr<losses::TeacherTargets> DecodeTargets(
    const v1::SoftTargets& message, int64_t expected_rows,
    std::shared_ptr<const losses::OutputHead> head,
    const torch::Tensor& indices) {
  losses::TeacherTargets targets;
  if (!(message.temperature() >= kMinTemperature) ||
      !std::isfinite(message.temperature())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "soft targets temperature must be finite and >= ", kMinTemperature,
        ", got ", message.temperature()));
  }
  if (message.num_classes() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "soft targets num_classes must be >= 1, got ", message.num_classes()));
  }
  targets.temperature = message.temperature();
  targets.num_classes = message.num_classes();
  const int64_t classes = message.num_classes();

  auto check_rows = [&](const torch::Tensor& t,
                        absl::string_view what) -> absl::Status {
    if (t.dim() < 1 || (expected_rows >= 0 && t.size(0) != expected_rows)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " shape ", ShapeString(t.sizes()),
                       " does not cover ", expected_rows, " samples"));
    }
    return absl::OkStatus();
  };

  switch (message.encoding()) {
    case v1::DENSE_FP32:
    case v1::DENSE_FP16: {
      DISTILL_RETURN_IF_ERROR(CheckTensor(message.probs(), "probs",
                                          message.encoding() == v1::DENSE_FP32
                                              ? v1::Tensor::FLOAT32
                                              : v1::Tensor::FLOAT16));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor probs,
                               FromProto(message.probs(), "probs"));
      if (probs.dim() != 2 && probs.dim() != 3) {
        return absl::InvalidArgumentError(
            absl::StrCat("probs must be [N, C] or [N, S, V], got ",
                         ShapeString(probs.sizes())));
      }
      if (probs.size(-1) != classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("probs shape ", ShapeString(probs.sizes()),
                         " does not end in num_classes ", classes));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(probs, "probs"));
      probs = probs.to(torch::kFloat);
      if (!AllWithin(probs, 0.0, 1.0 + kProbSlack)) {
        return absl::InvalidArgumentError(
            "probs must be finite probabilities in [0, 1]");
      }
      DISTILL_RETURN_IF_ERROR(CheckRowSums(
          probs.sum(-1), message.encoding() == v1::DENSE_FP32 ? 1e-3 : 1e-2,
          "probs rows"));
      targets.form = losses::TeacherTargets::Form::kDense;
      targets.probs = probs;
      return targets;
    }
    case v1::TOP_K: {
      DISTILL_RETURN_IF_ERROR(CheckTensor(message.topk_values(), "topk_values",
                                          v1::Tensor::FLOAT16));
      DISTILL_RETURN_IF_ERROR(CheckTensor(message.topk_indices(),
                                          "topk_indices", v1::Tensor::INT32));
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.tail_mass(), "tail_mass", v1::Tensor::FLOAT32));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor values,
                               FromProto(message.topk_values(), "topk_values"));
      DISTILL_ASSIGN_OR_RETURN(
          torch::Tensor indices,
          FromProto(message.topk_indices(), "topk_indices"));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor tail,
                               FromProto(message.tail_mass(), "tail_mass"));
      if ((values.dim() != 2 && values.dim() != 3) ||
          indices.sizes() != values.sizes() ||
          tail.sizes() != values.sizes().slice(0, values.dim() - 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "top-k shapes disagree: topk_values ", ShapeString(values.sizes()),
            ", topk_indices ", ShapeString(indices.sizes()), ", tail_mass ",
            ShapeString(tail.sizes()),
            " (want [N(, S), k], [N(, S), k], [N(, S)])"));
      }
      const int64_t k = values.size(-1);
      if (k < 1 || k > classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "top-k k = ", k, " must be in [1, num_classes = ", classes, "]"));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(values, "topk_values"));
      if (indices.numel() > 0 && (indices.min().item<int64_t>() < 0 ||
                                  indices.max().item<int64_t>() >= classes)) {
        return absl::InvalidArgumentError(
            absl::StrCat("topk_indices must be in [0, ", classes, ")"));
      }
      values = values.to(torch::kFloat);
      if (!AllWithin(values, 0.0, 1.0 + kProbSlack) ||
          !AllWithin(tail, 0.0, 1.0 + kProbSlack)) {
        return absl::InvalidArgumentError(
            "topk_values and tail_mass must be finite probabilities in [0, 1]");
      }
      DISTILL_RETURN_IF_ERROR(CheckRowSums(values.sum(-1) + tail, 1e-2,
                                           "top-k values plus tail_mass"));
      targets.form = losses::TeacherTargets::Form::kTopK;
      targets.values = values;
      targets.indices = indices.to(torch::kLong);
      targets.tail_mass = tail;
      return targets;
    }
    case v1::DENSE_LOGP_FP16: {
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.probs(), "probs", v1::Tensor::FLOAT16));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor logp,
                               FromProto(message.probs(), "probs"));
      if ((logp.dim() != 2 && logp.dim() != 3) || logp.size(-1) != classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "log-probabilities must be [N, C] or [N, S, V] with C = "
            "num_classes ",
            classes, ", got ", ShapeString(logp.sizes())));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(logp, "probs"));
      logp = logp.to(torch::kFloat);
      // -inf is a probability of 0; NaN and +inf are not probabilities.
      if (logp.numel() > 0 &&
          (torch::isnan(logp).any().item<bool>() ||
           (logp > std::log1p(kProbSlack)).any().item<bool>())) {
        return absl::InvalidArgumentError(
            "log-probabilities must be numbers <= 0");
      }
      // fp16 rounds each log p by up to |log p| / 2048 (relative); a row
      // still sums to 1 within 1e-2, or it is not a distribution.
      torch::Tensor probs = logp.exp();
      DISTILL_RETURN_IF_ERROR(
          CheckRowSums(probs.sum(-1), 1e-2, "log-probability rows"));
      targets.form = losses::TeacherTargets::Form::kDense;
      targets.probs = probs / probs.sum(-1, true);
      return targets;
    }
    case v1::TOP_K_PACKED: {
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.topk_packed(), "topk_packed", v1::Tensor::UINT8));
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.tail_mass(), "tail_mass", v1::Tensor::FLOAT32));
      const int64_t k = message.top_k();
      if (k < 1 || k > classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "top-k k = ", k, " must be in [1, num_classes = ", classes, "]"));
      }
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor records,
                               FromProto(message.topk_packed(), "topk_packed"));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor tail,
                               FromProto(message.tail_mass(), "tail_mass"));
      if ((records.dim() != 2 && records.dim() != 3) ||
          tail.sizes() != records.sizes().slice(0, records.dim() - 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "packed top-k shapes disagree: topk_packed ",
            ShapeString(records.sizes()), ", tail_mass ",
            ShapeString(tail.sizes()), " (want [N(, S), bytes], [N(, S)])"));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(records, "topk_packed"));
      DISTILL_ASSIGN_OR_RETURN(UnpackedTopK unpacked,
                               UnpackTopK(records, k, classes));
      if (!AllWithin(tail, 0.0, 1.0 + kProbSlack)) {
        return absl::InvalidArgumentError(
            "tail_mass must be finite probabilities in [0, 1]");
      }
      // Each listed value is off by at most its row's relative_error; the
      // sum may be off by that much on top of the usual fp16 tolerance.
      const torch::Tensor listed = unpacked.values.sum(-1);
      const torch::Tensor off = (listed + tail - 1).abs();
      const torch::Tensor allowed = unpacked.relative_error * listed + 1e-2;
      const torch::Tensor bad = (off > allowed).flatten();
      if (bad.numel() > 0 && bad.any().item<bool>()) {
        const int64_t row = bad.nonzero()[0][0].item<int64_t>();
        return absl::InvalidArgumentError(absl::StrCat(
            "packed top-k values plus tail_mass must sum to 1 within the "
            "quantization error; row ",
            row, " sums to ", (listed + tail).flatten()[row].item<float>()));
      }
      // Listed values scaled to sum to exactly 1 - tail.
      const torch::Tensor scale =
          torch::where(listed > 0, (1 - tail).clamp_min(0) / listed,
                       torch::zeros_like(listed));
      targets.form = losses::TeacherTargets::Form::kTopK;
      targets.values = unpacked.values * scale.unsqueeze(-1);
      targets.indices = unpacked.indices;
      targets.tail_mass = tail;
      return targets;
    }
    case v1::HIDDEN_FP16: {
      if (head == nullptr) {
        return absl::InvalidArgumentError(
            "HIDDEN_FP16 targets need the teacher's output head, and none "
            "was fetched");
      }
      const int64_t width = head->weight.size(1);
      if (classes != head->weight.size(0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "hidden-state targets over num_classes ", classes,
            " but the output head has ", head->weight.size(0), " rows"));
      }
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.hidden(), "hidden", v1::Tensor::FLOAT16));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor hidden,
                               FromProto(message.hidden(), "hidden"));
      if ((hidden.dim() != 2 && hidden.dim() != 3) ||
          hidden.size(-1) != width) {
        return absl::InvalidArgumentError(absl::StrCat(
            "hidden must be [N, H] or [N, S, H] with H = ", width,
            " (the output head's width), got ", ShapeString(hidden.sizes())));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(hidden, "hidden"));
      hidden = hidden.to(torch::kFloat);
      if (hidden.numel() > 0 && !torch::isfinite(hidden).all().item<bool>()) {
        return absl::InvalidArgumentError("hidden must be finite numbers");
      }
      return losses::TeacherTargets::FromHidden(hidden, std::move(head),
                                                message.temperature());
    }
    case v1::INDEX_LOGP: {
      if (!indices.defined()) {
        return absl::InvalidArgumentError(
            "INDEX_LOGP targets answer a batch that sent indices, and this "
            "one sent none");
      }
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.index_logp(), "index_logp", v1::Tensor::FLOAT32));
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.tail_mass(), "tail_mass", v1::Tensor::FLOAT32));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor logp,
                               FromProto(message.index_logp(), "index_logp"));
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor tail,
                               FromProto(message.tail_mass(), "tail_mass"));
      if (logp.sizes() != indices.sizes() || logp.dim() < 1 ||
          tail.sizes() != logp.sizes().slice(0, logp.dim() - 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "index log-probability shapes disagree: index_logp ",
            ShapeString(logp.sizes()), " and tail_mass ",
            ShapeString(tail.sizes()), " for indices ",
            ShapeString(indices.sizes()), " (want ",
            ShapeString(indices.sizes()), " and the same without k)"));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(logp, "index_logp"));
      // log softmax is <= 0 up to float rounding; -inf is a probability
      // of 0 (a teacher that masks a class).
      if (logp.numel() > 0 && (torch::isnan(logp).any().item<bool>() ||
                               logp.max().item<double>() > 1e-5)) {
        return absl::InvalidArgumentError(
            "index_logp must be log-probabilities (numbers <= 0)");
      }
      if (!AllWithin(tail, 0.0, 1.0 + 1e-5)) {
        return absl::InvalidArgumentError(
            "tail_mass must be a finite probability in [0, 1]");
      }
      const torch::Tensor values = logp.exp();
      DISTILL_RETURN_IF_ERROR(CheckRowSums(values.sum(-1) + tail, 1e-3,
                                           "index probabilities plus "
                                           "tail_mass"));
      targets.form = losses::TeacherTargets::Form::kTopK;
      targets.values = values;
      targets.indices = indices.to(torch::kLong);
      targets.tail_mass = tail;
      return targets;
    }
    case v1::SAMPLED: {
      DISTILL_RETURN_IF_ERROR(
          CheckTensor(message.sample_ids(), "sample_ids", v1::Tensor::INT32));
      DISTILL_RETURN_IF_ERROR(CheckTensor(message.sample_counts(),
                                          "sample_counts", v1::Tensor::UINT8));
      const int64_t m = message.samples();
      if (m < 1 || m > kMaxSamples) {
        return absl::InvalidArgumentError(
            absl::StrCat("samples must be in [1, ", kMaxSamples, "], got ", m));
      }
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor ids,
                               FromProto(message.sample_ids(), "sample_ids"));
      DISTILL_ASSIGN_OR_RETURN(
          torch::Tensor counts,
          FromProto(message.sample_counts(), "sample_counts"));
      if ((ids.dim() != 2 && ids.dim() != 3) || counts.sizes() != ids.sizes() ||
          ids.size(-1) < 1 || ids.size(-1) > m) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sampled shapes disagree: sample_ids ", ShapeString(ids.sizes()),
            ", sample_counts ", ShapeString(counts.sizes()),
            " (want both [N(, S), w] with 1 <= w <= samples = ", m, ")"));
      }
      DISTILL_RETURN_IF_ERROR(check_rows(ids, "sample_ids"));
      if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 ||
                              ids.max().item<int64_t>() >= classes)) {
        return absl::InvalidArgumentError(
            absl::StrCat("sample_ids must be in [0, ", classes, ")"));
      }
      const torch::Tensor row_draws = counts.to(torch::kLong).sum(-1);
      if (row_draws.numel() > 0 && (row_draws != m).any().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample_counts must sum to samples = ", m,
            " in every row; a row sums to ",
            row_draws.masked_select(row_draws != m)[0].item<int64_t>()));
      }
      // Padded back to m columns, so every batch of one stream has the
      // same shape (joining, caching).
      std::vector<int64_t> shape = ids.sizes().vec();
      shape.back() = m;
      const int64_t w = ids.size(-1);
      targets.form = losses::TeacherTargets::Form::kSampled;
      targets.samples = m;
      targets.indices = torch::zeros(shape, torch::kLong);
      targets.indices.narrow(-1, 0, w).copy_(ids);
      targets.values = torch::zeros(shape, torch::kFloat);
      targets.values.narrow(-1, 0, w).copy_(counts.to(torch::kFloat) /
                                            static_cast<double>(m));
      shape.pop_back();
      targets.tail_mass = torch::zeros(shape, torch::kFloat);
      return targets;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("soft targets have unknown encoding ",
                       EncodingName(message.encoding())));
  }
}

}  // namespace distill::teacher
