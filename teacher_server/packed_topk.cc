#include "teacher_server/packed_topk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace distill::teacher {
namespace {

// hi may exceed 0 by float rounding of a probability of 1.
constexpr float kLogSlack = 1e-3f;

std::vector<int64_t> RowsShape(const torch::Tensor& t) {
  std::vector<int64_t> shape = t.sizes().vec();
  shape.pop_back();
  return shape;
}

// Writes k ids of `bits` bits each from `ids` to `dst`
// (ceil(k * bits / 8) bytes).
void PackRowIds(const int64_t* ids, int64_t k, int bits, uint8_t* dst) {
  uint64_t acc = 0;
  int pending = 0;
  for (int64_t i = 0; i < k; ++i) {
    acc |= static_cast<uint64_t>(ids[i]) << pending;
    pending += bits;
    while (pending >= 8) {
      *dst++ = static_cast<uint8_t>(acc & 0xff);
      acc >>= 8;
      pending -= 8;
    }
  }
  if (pending > 0) *dst = static_cast<uint8_t>(acc & 0xff);
}

// Reads k ids written by PackRowIds; the first id >= num_classes is
// returned (-1 when there is none).
int64_t UnpackRowIds(const uint8_t* src, int64_t k, int bits,
                     int64_t num_classes, int64_t* ids) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t acc = 0;
  int available = 0;
  for (int64_t i = 0; i < k; ++i) {
    while (available < bits) {
      acc |= static_cast<uint64_t>(*src++) << available;
      available += 8;
    }
    ids[i] = static_cast<int64_t>(acc & mask);
    acc >>= bits;
    available -= bits;
    if (ids[i] >= num_classes) return ids[i];
  }
  return -1;
}

}  // namespace

int PackedIdBits(int64_t num_classes) {
  int bits = 1;
  while (bits < 63 && (int64_t{1} << bits) < num_classes) ++bits;
  return bits;
}

int64_t PackedRowBytes(int64_t k, int64_t num_classes) {
  return 8 + (k * PackedIdBits(num_classes) + 7) / 8 + k;
}

torch::Tensor PackTopK(const torch::Tensor& values,
                       const torch::Tensor& indices, int64_t num_classes) {
  const int64_t k = values.size(-1);
  const int bits = PackedIdBits(num_classes);
  const int64_t id_bytes = (k * bits + 7) / 8;
  const int64_t row_bytes = PackedRowBytes(k, num_classes);
  const torch::Tensor v =
      values.detach().to(torch::kCPU, torch::kFloat).contiguous().view({-1, k});
  const torch::Tensor ids =
      indices.detach().to(torch::kCPU, torch::kLong).contiguous().view({-1, k});
  const int64_t rows = v.size(0);
  torch::Tensor out = torch::zeros({rows, row_bytes}, torch::kByte);
  std::vector<float> lp(k);
  for (int64_t r = 0; r < rows; ++r) {
    const float* pv = v.data_ptr<float>() + r * k;
    const int64_t* pid = ids.data_ptr<int64_t>() + r * k;
    uint8_t* dst = out.data_ptr<uint8_t>() + r * row_bytes;
    float hi = kPackedLogFloor, lo = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      lp[i] = std::max(std::log(std::max(pv[i], 0.0f)), kPackedLogFloor);
      hi = std::max(hi, lp[i]);
      lo = i == 0 ? lp[i] : std::min(lo, lp[i]);
    }
    std::memcpy(dst, &hi, 4);
    std::memcpy(dst + 4, &lo, 4);
    PackRowIds(pid, k, bits, dst + 8);
    uint8_t* codes = dst + 8 + id_bytes;
    const float range = hi - lo;
    for (int64_t i = 0; i < k; ++i) {
      codes[i] =
          range > 0 ? static_cast<uint8_t>(std::clamp(
                          std::lround(255.0f * (hi - lp[i]) / range), 0L, 255L))
                    : 0;
    }
  }
  std::vector<int64_t> shape = RowsShape(values);
  shape.push_back(row_bytes);
  return out.view(shape);
}

absl::StatusOr<UnpackedTopK> UnpackTopK(const torch::Tensor& records, int64_t k,
                                        int64_t num_classes) {
  const int64_t row_bytes = PackedRowBytes(k, num_classes);
  if (records.scalar_type() != torch::kByte || records.dim() < 1 ||
      records.size(-1) != row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("topk_packed rows must be ", row_bytes, " bytes (k = ", k,
                     ", ", PackedIdBits(num_classes), "-bit ids), got ",
                     records.dim() < 1 ? 0 : records.size(-1)));
  }
  const int bits = PackedIdBits(num_classes);
  const int64_t id_bytes = (k * bits + 7) / 8;
  const torch::Tensor in = records.contiguous().view({-1, row_bytes});
  const int64_t rows = in.size(0);
  torch::Tensor values = torch::empty({rows, k}, torch::kFloat);
  torch::Tensor indices = torch::empty({rows, k}, torch::kLong);
  torch::Tensor error = torch::empty({rows}, torch::kFloat);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = in.data_ptr<uint8_t>() + r * row_bytes;
    float hi, lo;
    std::memcpy(&hi, src, 4);
    std::memcpy(&lo, src + 4, 4);
    if (!std::isfinite(hi) || !std::isfinite(lo) || lo > hi || hi > kLogSlack) {
      return absl::InvalidArgumentError(absl::StrCat(
          "topk_packed row ", r, " has log-probability range [", lo, ", ", hi,
          "]; it must be finite, ordered and at most 0"));
    }
    const int64_t bad = UnpackRowIds(src + 8, k, bits, num_classes,
                                     indices.data_ptr<int64_t>() + r * k);
    if (bad >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("topk_packed row ", r, " lists class ", bad,
                       "; classes are [0, ", num_classes, ")"));
    }
    const uint8_t* codes = src + 8 + id_bytes;
    float* pv = values.data_ptr<float>() + r * k;
    for (int64_t i = 0; i < k; ++i) {
      pv[i] = std::exp(hi + codes[i] / 255.0f * (lo - hi));
    }
    error.data_ptr<float>()[r] = std::expm1((hi - lo) / 510.0f);
  }
  std::vector<int64_t> shape = RowsShape(records);
  UnpackedTopK out;
  out.relative_error = error.view(shape);
  shape.push_back(k);
  out.values = values.view(shape);
  out.indices = indices.view(shape);
  return out;
}

torch::Tensor PackIds(const torch::Tensor& indices, int64_t num_classes) {
  const int64_t k = indices.size(-1);
  const int bits = PackedIdBits(num_classes);
  const int64_t id_bytes = (k * bits + 7) / 8;
  const torch::Tensor ids =
      indices.detach().to(torch::kCPU, torch::kLong).contiguous().view({-1, k});
  const int64_t rows = ids.size(0);
  torch::Tensor out = torch::zeros({rows, id_bytes}, torch::kByte);
  for (int64_t r = 0; r < rows; ++r) {
    PackRowIds(ids.data_ptr<int64_t>() + r * k, k, bits,
               out.data_ptr<uint8_t>() + r * id_bytes);
  }
  std::vector<int64_t> shape = RowsShape(indices);
  shape.push_back(id_bytes);
  return out.view(shape);
}

absl::StatusOr<torch::Tensor> UnpackIds(const torch::Tensor& bytes, int64_t k,
                                        int64_t num_classes) {
  const int bits = PackedIdBits(num_classes);
  const int64_t id_bytes = (k * bits + 7) / 8;
  if (bytes.scalar_type() != torch::kByte || bytes.dim() < 1 ||
      bytes.size(-1) != id_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed ids must be ", id_bytes, " bytes a row (", k, " ids of ", bits,
        " bits), got ", bytes.dim() < 1 ? 0 : bytes.size(-1)));
  }
  const torch::Tensor in = bytes.contiguous().view({-1, id_bytes});
  const int64_t rows = in.size(0);
  torch::Tensor ids = torch::empty({rows, k}, torch::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bad =
        UnpackRowIds(in.data_ptr<uint8_t>() + r * id_bytes, k, bits,
                     num_classes, ids.data_ptr<int64_t>() + r * k);
    if (bad >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("packed ids: row ", r, " holds id ", bad,
                       "; ids are [0, ", num_classes, ")"));
    }
  }
  std::vector<int64_t> shape = RowsShape(bytes);
  shape.push_back(k);
  return ids.view(shape);
}

}  // namespace distill::teacher
