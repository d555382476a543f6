#include "student/qat/qat_net.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "student/qat/bn_fold.h"
#include "student/qat/fake_quant.h"

namespace distill::student::qat {

using Kind = LayerOp::Kind;

struct QatNet::Unit {
  std::string name;
  bool conv = false;
  torch::Tensor weight;
  torch::Tensor bias;  // may be undefined
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;

  bool has_bn = false;
  torch::Tensor gamma, beta, running_mean, running_var, num_batches_tracked;
  double eps = 1e-5;
  c10::optional<double> momentum;

  bool quantized = false;
  RangeObserver observer;
  float input_scale = kMinScale;
  torch::Tensor weight_scales;
};

namespace {

std::vector<int64_t> ToVector(const torch::ExpandingArray<2>& a) {
  return std::vector<int64_t>(a->begin(), a->end());
}

bool IsWeighted(Kind k) { return k == Kind::kConv2d || k == Kind::kLinear; }
bool IsBatchNorm(Kind k) {
  return k == Kind::kBatchNorm2d || k == Kind::kBatchNorm1d;
}

template <typename BatchNormImpl>
void TakeBatchNorm(BatchNormImpl& bn, bool& has_bn, torch::Tensor& gamma,
                   torch::Tensor& beta, torch::Tensor& mean, torch::Tensor& var,
                   torch::Tensor& tracked, double& eps,
                   c10::optional<double>& momentum) {
  has_bn = true;
  gamma = bn.weight;
  beta = bn.bias;
  mean = bn.running_mean;
  var = bn.running_var;
  tracked = bn.num_batches_tracked;
  eps = bn.options.eps();
  momentum = bn.options.momentum();
}

}  // namespace

std::vector<std::string> QatNet::QuantizableLayers(ZooModule& model) {
  std::vector<std::string> names;
  for (const LayerOp& op : model.Layers()) {
    if (IsWeighted(op.kind)) names.push_back(op.name);
  }
  return names;
}

absl::StatusOr<std::unique_ptr<QatNet>> QatNet::Create(
    ZooModule& model, const QatNetOptions& options) {
  const std::vector<std::string> known = QuantizableLayers(model);
  for (const std::string& skip : options.skip_layers) {
    if (std::find(known.begin(), known.end(), skip) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", skip,
                       "' is not a Conv2d or Linear layer of the model; its "
                       "layers: ",
                       absl::StrJoin(known, ", ")));
    }
  }
  std::unique_ptr<QatNet> net(new QatNet);
  const std::vector<LayerOp> layers = model.Layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerOp& op = layers[i];
    Op out{op.kind};
    if (IsBatchNorm(op.kind)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BatchNorm '", op.name,
          "' follows no Conv2d or Linear, so it cannot be folded; the QAT "
          "stage supports BatchNorm only right after a Conv2d or Linear"));
    }
    if (op.kind == Kind::kDropout) {
      out.dropout = op.module->as<torch::nn::DropoutImpl>()->options.p();
    }
    if (IsWeighted(op.kind)) {
      auto unit = std::make_shared<Unit>();
      unit->name = op.name;
      unit->observer = RangeObserver(options.observer);
      if (op.kind == Kind::kConv2d) {
        auto* conv = op.module->as<torch::nn::Conv2dImpl>();
        const auto& o = conv->options;
        const auto* padding =
            c10::get_if<torch::ExpandingArray<2>>(&o.padding());
        if (padding == nullptr ||
            !c10::holds_alternative<torch::enumtype::kZeros>(
                o.padding_mode())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Conv2d '", op.name,
              "' uses 'same'/'valid' or non-zero padding modes, which the QAT "
              "stage does not support; give explicit zero padding"));
        }
        unit->conv = true;
        unit->weight = conv->weight;
        unit->bias = conv->bias;
        unit->stride = ToVector(o.stride());
        unit->padding = ToVector(*padding);
        unit->dilation = ToVector(o.dilation());
        unit->groups = o.groups();
      } else {
        auto* linear = op.module->as<torch::nn::LinearImpl>();
        unit->weight = linear->weight;
        unit->bias = linear->bias;
      }
      if (i + 1 < layers.size() && IsBatchNorm(layers[i + 1].kind)) {
        const LayerOp& bn = layers[i + 1];
        const bool matches = (bn.kind == Kind::kBatchNorm2d) == unit->conv;
        if (!matches) {
          return absl::InvalidArgumentError(absl::StrCat(
              "BatchNorm '", bn.name, "' does not match the ",
              unit->conv ? "Conv2d" : "Linear", " '", op.name,
              "' before it (BatchNorm2d follows Conv2d, BatchNorm1d Linear)"));
        }
        // BatchNorm1d and BatchNorm2d share options and buffers, not a base.
        auto take = [&](auto& m) -> absl::Status {
          if (!m.options.track_running_stats()) {
            return absl::InvalidArgumentError(
                absl::StrCat("BatchNorm '", bn.name,
                             "' keeps no running statistics, so "
                             "it cannot be folded for export"));
          }
          TakeBatchNorm(m, unit->has_bn, unit->gamma, unit->beta,
                        unit->running_mean, unit->running_var,
                        unit->num_batches_tracked, unit->eps, unit->momentum);
          return absl::OkStatus();
        };
        const absl::Status taken =
            bn.kind == Kind::kBatchNorm2d
                ? take(*bn.module->as<torch::nn::BatchNorm2dImpl>())
                : take(*bn.module->as<torch::nn::BatchNorm1dImpl>());
        if (!taken.ok()) return taken;
        ++i;
      }
      unit->quantized =
          std::find(options.skip_layers.begin(), options.skip_layers.end(),
                    op.name) == options.skip_layers.end();
      (unit->quantized ? net->quantized_ : net->skipped_).push_back(op.name);
      out.unit = static_cast<int>(net->units_.size());
      net->units_.push_back(std::move(unit));
    }
    net->ops_.push_back(out);
  }
  return net;
}

absl::Status QatNet::SetFakeQuant(bool on) {
  if (on) {
    for (const auto& unit : units_) {
      if (unit->quantized && unit->observer.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer '", unit->name,
            "' has observed no input yet: calibrate before fake quantization"));
      }
    }
  }
  fake_quant_ = on;
  return absl::OkStatus();
}

std::pair<torch::Tensor, torch::Tensor> QatNet::Fold(Unit& unit,
                                                     const torch::Tensor& x,
                                                     bool batch_stats) {
  if (!unit.has_bn) {
    return {unit.weight,
            unit.bias.defined()
                ? unit.bias
                : torch::zeros({unit.weight.size(0)}, unit.weight.options())};
  }
  BatchNormStats stats{unit.gamma, unit.beta, unit.running_mean,
                       unit.running_var, unit.eps};
  if (batch_stats) {
    // Jacob et al. (2018): the float layer's output gives this batch's
    // statistics, and the weights are folded with them, so the quantized
    // weights see what BatchNorm would do to this batch.
    torch::Tensor y = Apply(unit, x, unit.weight, unit.bias);
    std::vector<int64_t> dims = {0};
    for (int64_t d = 2; d < y.dim(); ++d) dims.push_back(d);
    stats.mean = y.mean(dims);
    stats.var = y.var(dims, /*unbiased=*/false);
    {
      torch::NoGradGuard no_grad;
      const double n = static_cast<double>(y.numel() / y.size(1));
      unit.num_batches_tracked.add_(1);
      const double m = unit.momentum
                           ? *unit.momentum
                           : 1.0 / unit.num_batches_tracked.item<double>();
      unit.running_mean.mul_(1 - m).add_(stats.mean.detach() * m);
      unit.running_var.mul_(1 - m).add_(stats.var.detach() *
                                        (n / std::max(n - 1, 1.0)) * m);
    }
  }
  FoldedWeights folded = FoldBatchNorm(unit.weight, unit.bias, stats);
  return {folded.weight, folded.bias};
}

torch::Tensor QatNet::Apply(const Unit& unit, const torch::Tensor& x,
                            const torch::Tensor& weight,
                            const torch::Tensor& bias) {
  if (unit.conv) {
    return torch::conv2d(x, weight, bias, unit.stride, unit.padding,
                         unit.dilation, unit.groups);
  }
  return torch::linear(x, weight, bias);
}

torch::Tensor QatNet::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  for (const Op& op : ops_) {
    switch (op.kind) {
      case Kind::kConv2d:
      case Kind::kLinear: {
        Unit& unit = *units_[op.unit];
        if (unit.quantized && observing_) {
          unit.observer.Observe(x);
          unit.input_scale = ScaleFromAmax(unit.observer.Amax());
        }
        if (unit.quantized && fake_quant_) {
          x = FakeQuantActivation(x, unit.input_scale);
        }
        auto [weight, bias] =
            Fold(unit, x, /*batch_stats=*/training_ && !bn_frozen_);
        if (unit.quantized) {
          if (observing_ || !unit.weight_scales.defined()) {
            unit.weight_scales = ScalesFromAmax(PerChannelAmax(weight));
          }
          if (fake_quant_) weight = FakeQuantWeight(weight, unit.weight_scales);
        }
        x = Apply(unit, x, weight, bias);
        break;
      }
      case Kind::kRelu:
        x = torch::relu(x);
        break;
      case Kind::kMaxPool2x2:
        x = torch::max_pool2d(x, 2);
        break;
      case Kind::kFlatten:
        x = x.flatten(1);
        break;
      case Kind::kDropout:
        x = torch::dropout(x, op.dropout, training_);
        break;
      case Kind::kBatchNorm2d:
      case Kind::kBatchNorm1d:
        break;  // folded into the layer before (Create)
    }
  }
  return x;
}

std::vector<ExportStep> QatNet::ExportPlan() {
  torch::NoGradGuard no_grad;
  std::vector<ExportStep> steps;
  for (const Op& op : ops_) {
    ExportStep step;
    switch (op.kind) {
      case Kind::kConv2d:
      case Kind::kLinear: {
        Unit& unit = *units_[op.unit];
        auto [weight, bias] =
            Fold(unit, torch::Tensor(), /*batch_stats=*/false);
        step.kind =
            unit.conv ? ExportStep::Kind::kConv : ExportStep::Kind::kGemm;
        FoldedLayer& layer = step.layer;
        layer.name = unit.name;
        layer.conv = unit.conv;
        layer.weight = weight.detach().clone();
        layer.bias = bias.detach().clone();
        layer.quantized = unit.quantized;
        if (unit.quantized) {
          layer.weight_scales = unit.weight_scales.defined()
                                    ? unit.weight_scales.clone()
                                    : ScalesFromAmax(PerChannelAmax(weight));
          layer.input_scale = unit.input_scale;
        }
        layer.stride = unit.stride;
        layer.padding = unit.padding;
        layer.dilation = unit.dilation;
        layer.groups = unit.groups;
        break;
      }
      case Kind::kRelu:
        step.kind = ExportStep::Kind::kRelu;
        break;
      case Kind::kMaxPool2x2:
        step.kind = ExportStep::Kind::kMaxPool2x2;
        break;
      case Kind::kFlatten:
        step.kind = ExportStep::Kind::kFlatten;
        break;
      default:
        continue;  // dropout is the identity in eval
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

}  // namespace distill::student::qat
