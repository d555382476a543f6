#include "student/qat/group_quant.h"

#include "absl/strings/str_cat.h"
#include "student/qat/fake_quant.h"

namespace distill::student::qat {
namespace {

int64_t MaxCode(const GroupQuantSpec& spec) { return (1 << spec.bits) - 1; }

// [out, in] viewed as [out · in / group_size, group_size]: one row a group.
torch::Tensor Groups(const torch::Tensor& weight, const GroupQuantSpec& spec) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % spec.group_size == 0,
              "group quantization needs a [out, in] weight with in a multiple "
              "of ",
              spec.group_size, ", got ", weight.sizes());
  return weight.reshape({-1, spec.group_size});
}

}  // namespace

absl::Status CheckGroupQuantSpec(const GroupQuantSpec& spec) {
  if (spec.bits != 4 && spec.bits != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight bits must be 4 or 8, got ", spec.bits));
  }
  if (spec.group_size != 32 && spec.group_size != 64 &&
      spec.group_size != 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group size must be 32, 64 or 128, got ", spec.group_size));
  }
  return absl::OkStatus();
}

absl::Status CheckGroupQuantFits(const GroupQuantSpec& spec,
                                 const std::string& layer,
                                 int64_t in_features) {
  if (in_features % spec.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group size ", spec.group_size, " does not divide the input width ",
        in_features, " of layer '", layer, "'"));
  }
  return absl::OkStatus();
}

GroupQuantParams GroupQuantParamsFromWeight(const torch::Tensor& weight,
                                            const GroupQuantSpec& spec) {
  torch::NoGradGuard no_grad;
  const torch::Tensor g = Groups(weight.detach(), spec).to(torch::kFloat64);
  const std::vector<int64_t> shape = {weight.size(0),
                                      weight.size(1) / spec.group_size};
  GroupQuantParams params;
  if (spec.symmetric) {
    const int64_t half = int64_t{1} << (spec.bits - 1);
    params.scales = (torch::nan_to_num(g.abs().amax(1), 0.0) / (half - 1))
                        .to(torch::kFloat32)
                        .clamp_min(kMinScale)
                        .reshape(shape);
    params.zero_points =
        torch::full(shape, half, weight.options().dtype(torch::kInt32));
    return params;
  }
  const torch::Tensor low = torch::nan_to_num(g.amin(1), 0.0).clamp_max(0);
  const torch::Tensor high = torch::nan_to_num(g.amax(1), 0.0).clamp_min(0);
  const torch::Tensor scales =
      ((high - low) / MaxCode(spec)).to(torch::kFloat32).clamp_min(kMinScale);
  params.scales = scales.reshape(shape);
  params.zero_points = torch::round(-low / scales.to(torch::kFloat64))
                           .clamp(0, MaxCode(spec))
                           .to(torch::kInt32)
                           .reshape(shape);
  return params;
}

torch::Tensor FakeQuantGroupwise(const torch::Tensor& weight,
                                 const GroupQuantParams& params,
                                 const GroupQuantSpec& spec) {
  return torch::fake_quantize_per_channel_affine(
             Groups(weight, spec), params.scales.reshape(-1),
             params.zero_points.reshape(-1).to(torch::kInt32), /*axis=*/0,
             /*quant_min=*/0, /*quant_max=*/MaxCode(spec))
      .reshape(weight.sizes());
}

torch::Tensor QuantizeGroupwise(const torch::Tensor& weight,
                                const GroupQuantParams& params,
                                const GroupQuantSpec& spec) {
  torch::NoGradGuard no_grad;
  // Dividing the fake-quantized value by its scale recovers the integer
  // exactly, so the export holds precisely what the evaluation computed.
  const torch::Tensor s = params.scales.reshape({-1, 1});
  const torch::Tensor z = params.zero_points.reshape({-1, 1});
  const torch::Tensor q =
      torch::round(
          Groups(FakeQuantGroupwise(weight.detach(), params, spec), spec) / s) +
      z;
  return q.clamp(0, MaxCode(spec)).to(torch::kUInt8).reshape(weight.sizes());
}

MatMulNBitsWeights PackMatMulNBits(const torch::Tensor& codes,
                                   const GroupQuantParams& params,
                                   const GroupQuantSpec& spec) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kUInt8 &&
                  codes.size(1) % spec.group_size == 0,
              "MatMulNBits packs uint8 codes [N, K] with K a multiple of ",
              spec.group_size, ", got ", codes.scalar_type(), " ",
              codes.sizes());
  const int64_t n = codes.size(0);
  const int64_t blocks = codes.size(1) / spec.group_size;
  // Two 4-bit values a byte, the first in the low nibble.
  auto pack_nibbles = [](const torch::Tensor& values) {
    const torch::Tensor pairs =
        values.to(torch::kInt32).reshape({values.size(0), -1, 2});
    return (pairs.select(2, 0) + pairs.select(2, 1) * 16).to(torch::kUInt8);
  };
  MatMulNBitsWeights out;
  out.b = (spec.bits == 4 ? pack_nibbles(codes) : codes.clone())
              .reshape({n, blocks, spec.group_size * spec.bits / 8});
  out.scales = params.scales.to(torch::kFloat32).reshape(-1).contiguous();
  if (!spec.symmetric) {
    torch::Tensor z = params.zero_points.to(torch::kInt32).reshape({n, blocks});
    if (spec.bits == 4) {
      if (blocks % 2 != 0) {
        z = torch::cat({z, torch::zeros({n, 1}, torch::kInt32)}, 1);
      }
      out.zero_points = pack_nibbles(z).reshape(-1);
    } else {
      out.zero_points = z.to(torch::kUInt8).reshape(-1);
    }
  }
  return out;
}

}  // namespace distill::student::qat
