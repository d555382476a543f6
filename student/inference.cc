#include "student/inference.h"

#include <ATen/Context.h>

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/torch_status.h"

namespace distill::student {

struct InferenceModel::Step {
  enum class Kind { kConv, kLinear, kAffine, kRelu, kMaxPool2x2, kFlatten };
  Kind kind = Kind::kRelu;
  // The folded weight and bias (bias may be undefined). With `onednn`, a
  // conv's weight is reordered for oneDNN's conv (bias dense) and a linear
  // layer's weight and bias are oneDNN tensors.
  torch::Tensor weight, bias;
  bool onednn = false;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  // kAffine, a BatchNorm with no layer before it to fold into:
  // x * scale + shift, shaped to broadcast over [N, C, ...].
  torch::Tensor scale, shift;
};

namespace {

using Step = InferenceModel::Step;

// y = x * scale + shift per channel: a BatchNorm in eval mode.
struct ChannelAffine {
  torch::Tensor scale, shift;
};

// nullopt when the BatchNorm keeps no running statistics (its eval forward
// then normalizes with the batch's own, which no constant can stand for).
template <typename BatchNormImpl>
std::optional<ChannelAffine> AffineOf(BatchNormImpl& bn) {
  if (!bn.options.track_running_stats()) return std::nullopt;
  const torch::Tensor mean = bn.running_mean.detach();
  torch::Tensor scale =
      torch::rsqrt(bn.running_var.detach() + bn.options.eps());
  if (bn.options.affine()) scale = scale * bn.weight.detach();
  torch::Tensor shift = -mean * scale;
  if (bn.options.affine()) shift = shift + bn.bias.detach();
  return ChannelAffine{scale, shift};
}

// Folds `a` into the layer `step` (kConv or kLinear, still dense):
// w' = w * scale per output channel, b' = b * scale + shift.
void Fold(Step& step, const ChannelAffine& a) {
  std::vector<int64_t> shape(step.weight.dim(), 1);
  shape[0] = -1;
  step.weight = step.weight * a.scale.reshape(shape);
  step.bias = step.bias.defined() ? step.bias * a.scale + a.shift : a.shift;
}

// A conv's options as plain vectors; nullopt for what conv2d cannot take
// directly (string padding, padding modes other than zeros).
std::optional<Step> ConvStep(torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  if (padding == nullptr ||
      c10::get_if<torch::enumtype::kZeros>(&o.padding_mode()) == nullptr) {
    return std::nullopt;
  }
  Step s;
  s.kind = Step::Kind::kConv;
  s.weight = conv.weight.detach().clone();
  if (conv.bias.defined()) s.bias = conv.bias.detach().clone();
  auto vec = [](const torch::ExpandingArray<2>& a) {
    return std::vector<int64_t>(a->begin(), a->end());
  };
  s.stride = vec(o.stride());
  s.padding = vec(*padding);
  s.dilation = vec(o.dilation());
  s.groups = o.groups();
  return s;
}

Step Functional(Step::Kind kind) {
  Step s;
  s.kind = kind;
  return s;
}

torch::Tensor Dense(const torch::Tensor& x) {
  return x.is_mkldnn() ? x.to_dense() : x;
}

torch::Tensor OneDnn(const torch::Tensor& x) {
  return x.is_mkldnn() ? x : x.contiguous().to_mkldnn();
}

// Runs one step. Between oneDNN convs the activations stay in oneDNN's
// layout (ReLU and pooling run on it too), so each conv's input and weight
// are not reordered on every call; flatten and linear layers go back to
// dense tensors.
torch::Tensor Run(const Step& s, const torch::Tensor& x) {
  const auto bias = [&s] {
    return s.bias.defined() ? c10::optional<torch::Tensor>(s.bias)
                            : c10::nullopt;
  };
  switch (s.kind) {
    case Step::Kind::kConv:
      if (s.onednn) {
        return torch::mkldnn_convolution(OneDnn(x), s.weight, bias(), s.padding,
                                         s.stride, s.dilation, s.groups);
      }
      return torch::conv2d(Dense(x), s.weight, s.bias, s.stride, s.padding,
                           s.dilation, s.groups);
    case Step::Kind::kLinear:
      if (s.onednn) {
        return torch::mkldnn_linear(OneDnn(Dense(x)), s.weight, bias())
            .to_dense();
      }
      return torch::linear(Dense(x), s.weight, s.bias);
    case Step::Kind::kAffine:
      return torch::addcmul(s.shift, Dense(x), s.scale);
    case Step::Kind::kRelu:
      return torch::relu(x);
    case Step::Kind::kMaxPool2x2:
      return torch::max_pool2d(x, 2);
    case Step::Kind::kFlatten:
      return Dense(x).flatten(1);
  }
  return x;
}

// The prepared steps, or a reason they cannot be.
struct Plan {
  std::vector<Step> steps;
  std::string unsupported;  // non-empty: why not
  int convs = 0, linears = 0, folded = 0;
};

Plan BuildPlan(ZooModule& zoo) {
  Plan plan;
  // The last kConv/kLinear step, while nothing but a BatchNorm may still
  // follow it (a BatchNorm right after it folds into it).
  int foldable = -1;
  for (const LayerOp& op : zoo.Layers()) {
    std::optional<ChannelAffine> bn;
    switch (op.kind) {
      case LayerOp::Kind::kConv2d: {
        auto step = ConvStep(*op.module->as<torch::nn::Conv2dImpl>());
        if (!step) {
          plan.unsupported =
              absl::StrCat(op.name, ": a padding this cannot prepare");
          return plan;
        }
        plan.steps.push_back(*std::move(step));
        foldable = static_cast<int>(plan.steps.size()) - 1;
        ++plan.convs;
        continue;
      }
      case LayerOp::Kind::kLinear: {
        auto& linear = *op.module->as<torch::nn::LinearImpl>();
        Step s;
        s.kind = Step::Kind::kLinear;
        s.weight = linear.weight.detach().clone();
        if (linear.bias.defined()) s.bias = linear.bias.detach().clone();
        plan.steps.push_back(std::move(s));
        foldable = static_cast<int>(plan.steps.size()) - 1;
        ++plan.linears;
        continue;
      }
      case LayerOp::Kind::kBatchNorm2d:
        bn = AffineOf(*op.module->as<torch::nn::BatchNorm2dImpl>());
        break;
      case LayerOp::Kind::kBatchNorm1d:
        bn = AffineOf(*op.module->as<torch::nn::BatchNorm1dImpl>());
        break;
      case LayerOp::Kind::kDropout:
        continue;  // the identity in eval; does not end a fold
      case LayerOp::Kind::kRelu:
        plan.steps.push_back(Functional(Step::Kind::kRelu));
        break;
      case LayerOp::Kind::kMaxPool2x2:
        plan.steps.push_back(Functional(Step::Kind::kMaxPool2x2));
        break;
      case LayerOp::Kind::kFlatten:
        plan.steps.push_back(Functional(Step::Kind::kFlatten));
        break;
    }
    if (op.kind == LayerOp::Kind::kBatchNorm2d ||
        op.kind == LayerOp::Kind::kBatchNorm1d) {
      if (!bn) {
        plan.unsupported =
            absl::StrCat(op.name, ": a BatchNorm without running statistics");
        return plan;
      }
      if (foldable >= 0) {
        Fold(plan.steps[foldable], *bn);
        ++plan.folded;
      } else {
        Step s;
        s.kind = Step::Kind::kAffine;
        std::vector<int64_t> shape = {1, -1};
        if (op.kind == LayerOp::Kind::kBatchNorm2d) shape = {1, -1, 1, 1};
        s.scale = bn->scale.reshape(shape);
        s.shift = bn->shift.reshape(shape);
        plan.steps.push_back(std::move(s));
      }
    }
    foldable = -1;
  }
  return plan;
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceModel>> InferenceModel::Create(
    std::shared_ptr<Model> model, const InferenceOptions& options) {
  std::unique_ptr<InferenceModel> out(new InferenceModel);
  out->model_ = std::move(model);
  out->model_->train(false);
  ZooModule* zoo = out->model_->zoo_module();
  if (zoo == nullptr) {
    out->how_ = "eager: a TorchScript model runs its own forward";
    return out;
  }
  if (zoo->is_language_model()) {
    out->how_ = "eager: a language model runs its own forward";
    return out;
  }
  absl::Status prepared = TorchCall(
      absl::StrCat("preparing '", out->model_->description(),
                   "' for inference"),
      [&]() -> absl::Status {
        torch::NoGradGuard no_grad;
        Plan plan = BuildPlan(*zoo);
        if (!plan.unsupported.empty()) {
          out->how_ = absl::StrCat("eager: ", plan.unsupported);
          return absl::OkStatus();
        }
        const bool onednn = options.onednn && at::hasMKLDNN();
        for (Step& s : plan.steps) {
          if (s.kind == Step::Kind::kConv && onednn) {
            // Reordered once into the layout oneDNN's conv wants; the bias
            // stays dense, as oneDNN's conv takes it.
            s.weight = torch::mkldnn_reorder_conv2d_weight(
                s.weight.contiguous().to_mkldnn(), s.padding, s.stride,
                s.dilation, s.groups);
            s.onednn = true;
          } else if (s.kind == Step::Kind::kLinear && onednn) {
            s.weight = s.weight.contiguous().to_mkldnn();
            if (s.bias.defined()) s.bias = s.bias.contiguous().to_mkldnn();
            s.onednn = true;
          }
          out->steps_.push_back(std::make_shared<const Step>(std::move(s)));
        }
        std::vector<std::string> parts;
        if (plan.convs > 0) parts.push_back(absl::StrCat(plan.convs, " conv"));
        if (plan.linears > 0)
          parts.push_back(absl::StrCat(plan.linears, " linear"));
        out->how_ = absl::StrCat("prepared", onednn ? " for oneDNN" : "", ": ",
                                 absl::StrJoin(parts, ", "), ", ", plan.folded,
                                 " BatchNorm folded");
        return absl::OkStatus();
      });
  if (!prepared.ok()) return prepared;
  return out;
}

torch::Tensor InferenceModel::forward(const torch::Tensor& inputs) const {
  torch::NoGradGuard no_grad;
  if (steps_.empty()) return model_->forward(inputs);
  torch::Tensor x = inputs;
  for (const auto& step : steps_) x = Run(*step, x);
  return Dense(x);
}

}  // namespace distill::student
