#include "student/qat/gpt_quant.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "student/qat/fake_quant.h"

namespace distill::student::qat {
namespace {

// Captured rows a forward adds at most, as a share of the rows wanted, so
// that a capture spans at least this many forwards.
constexpr int64_t kCaptureSpread = 8;

}  // namespace

GptQuant::GptQuant(Gpt model, const GptQuantOptions& options)
    : model_(std::move(model)), options_(options) {}

absl::StatusOr<std::unique_ptr<GptQuant>> GptQuant::Create(
    Gpt model, const GptQuantOptions& options) {
  DISTILL_RETURN_IF_ERROR(CheckGroupQuantSpec(options.group));
  std::unique_ptr<GptQuant> quant(new GptQuant(model, options));
  const bool tied = model->options().tied_embedding;
  for (auto& [name, weight] : model->QuantizableWeights()) {
    DISTILL_RETURN_IF_ERROR(
        CheckGroupQuantFits(options.group, name, weight.size(1)));
    std::string input = name;
    if (name == "wte") input = tied ? "lm_head" : "";
    if (name == "wpe") input = "";
    const bool awq = !input.empty() && name != "wte";
    quant->layers_.push_back({name, weight, input, awq});
  }
  return quant;
}

GptQuant::~GptQuant() {
  if (model_->quantizer() == this) model_->SetQuantizer(nullptr);
}

void GptQuant::SetMode(GptQuantMode mode) {
  mode_ = mode;
  const bool hooked = mode != GptQuantMode::kFloat || capture_rows_ > 0;
  model_->SetQuantizer(hooked ? this : nullptr);
}

bool GptQuant::Calibrated() const {
  for (const GptQuantLayer& layer : layers_) {
    if (layer.input.empty()) continue;
    auto it = observers_.find(layer.input);
    if (it == observers_.end() || it->second.empty()) return false;
  }
  return true;
}

float GptQuant::ActivationScale(const std::string& layer) const {
  auto it = observers_.find(layer);
  TORCH_CHECK(it != observers_.end() && !it->second.empty(), "layer ", layer,
              " has no calibrated input range");
  return ScaleFromAmax(it->second.Amax());
}

void GptQuant::StartCapture(int64_t max_rows) {
  captured_.clear();
  captured_count_.clear();
  capture_rows_ = max_rows;
  SetMode(mode_);
}

void GptQuant::StopCapture() {
  capture_rows_ = 0;
  SetMode(mode_);
}

torch::Tensor GptQuant::AwqScales(const std::string& layer) const {
  auto it = awq_scales_.find(layer);
  return it == awq_scales_.end() ? torch::Tensor() : it->second;
}

std::vector<std::pair<std::string, AwqSearch>> GptQuant::SearchAwq(int grid) {
  std::vector<std::pair<std::string, AwqSearch>> searches;
  for (const GptQuantLayer& layer : layers_) {
    auto it = captured_.find(layer.input);
    if (!layer.awq || it == captured_.end()) continue;
    AwqSearch search = SearchAwqScales(layer.weight, torch::cat(it->second),
                                       options_.group, grid);
    if (search.alpha > 0) awq_scales_[layer.name] = search.scales;
    searches.emplace_back(layer.name, std::move(search));
  }
  return searches;
}

int64_t GptQuant::WeightBytes(GptQuantMode mode) const {
  int64_t bytes = 0;
  for (const auto& parameter : model_->parameters()) {
    const GptQuantLayer* layer = nullptr;
    for (const GptQuantLayer& l : layers_) {
      if (l.weight.is_same(parameter)) layer = &l;
    }
    const int64_t n = parameter.numel();
    if (layer == nullptr || mode == GptQuantMode::kFloat) {
      bytes += 4 * n;
    } else if (mode == GptQuantMode::kInt8) {
      bytes += n + 4 * parameter.size(0);
    } else {
      const GroupQuantSpec& spec = options_.group;
      const int64_t groups = n / spec.group_size;
      bytes += n * spec.bits / 8 + 4 * groups;
      if (!spec.symmetric) bytes += (groups * spec.bits + 7) / 8;
      if (awq_scales_.count(layer->name) > 0) bytes += 4 * parameter.size(1);
    }
  }
  return bytes;
}

torch::Tensor GptQuant::Weight(const std::string& layer,
                               const torch::Tensor& weight) {
  switch (mode_) {
    case GptQuantMode::kFloat:
      return weight;
    case GptQuantMode::kInt8:
      return FakeQuantWeight(weight, ScalesFromAmax(PerChannelAmax(weight)));
    case GptQuantMode::kGroupwise: {
      auto it = awq_scales_.find(layer);
      if (it != awq_scales_.end()) {
        return AwqFakeQuant(weight, it->second, options_.group);
      }
      return FakeQuantGroupwise(
          weight, GroupQuantParamsFromWeight(weight.detach(), options_.group),
          options_.group);
    }
  }
  return weight;
}

torch::Tensor GptQuant::Input(const std::string& layer,
                              const torch::Tensor& x) {
  if (capture_rows_ > 0) {
    int64_t& have = captured_count_[layer];
    if (have < capture_rows_) {
      const torch::Tensor rows = x.detach().reshape({-1, x.size(-1)});
      const int64_t want =
          std::min(capture_rows_ - have,
                   std::max<int64_t>(1, capture_rows_ / kCaptureSpread));
      const int64_t step = std::max<int64_t>(1, rows.size(0) / want);
      torch::Tensor kept = rows.slice(0, 0, rows.size(0), step);
      kept = kept.narrow(0, 0, std::min(want, kept.size(0)));
      captured_[layer].push_back(kept.to(torch::kFloat32).clone());
      have += kept.size(0);
    }
  }
  if (mode_ != GptQuantMode::kInt8) return x;
  if (observing_) {
    observers_.try_emplace(layer, options_.observer).first->second.Observe(x);
  }
  if (!activation_quant_) return x;
  return FakeQuantActivation(x, ActivationScale(layer));
}

}  // namespace distill::student::qat
