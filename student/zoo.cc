#include "student/zoo.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/torch_status.h"
#include "student/gpt.h"

namespace distill::student {
namespace {

using torch::nn::BatchNorm2d;
using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;
using torch::nn::Dropout;
using torch::nn::Linear;

// A conv stage: Conv3x3 -> BatchNorm -> ReLU, repeated, then 2x2 max pool.
class ConvStageImpl : public torch::nn::Module {
 public:
  ConvStageImpl(int64_t in, int64_t out, int64_t convs) {
    for (int64_t i = 0; i < convs; ++i) {
      auto conv = Conv2d(
          Conv2dOptions(i == 0 ? in : out, out, 3).padding(1).bias(false));
      auto bn = BatchNorm2d(out);
      convs_.push_back(register_module(absl::StrCat("conv", i), conv));
      bns_.push_back(register_module(absl::StrCat("bn", i), bn));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (size_t i = 0; i < convs_.size(); ++i) {
      x = torch::relu(bns_[i](convs_[i](x)));
    }
    return torch::max_pool2d(x, 2);
  }
  void AppendLayers(const std::string& prefix, std::vector<LayerOp>& out) {
    for (size_t i = 0; i < convs_.size(); ++i) {
      out.push_back({LayerOp::Kind::kConv2d, absl::StrCat(prefix, ".conv", i),
                     convs_[i].ptr()});
      out.push_back({LayerOp::Kind::kBatchNorm2d,
                     absl::StrCat(prefix, ".bn", i), bns_[i].ptr()});
      out.push_back({LayerOp::Kind::kRelu, "", nullptr});
    }
    out.push_back({LayerOp::Kind::kMaxPool2x2, "", nullptr});
  }

 private:
  std::vector<Conv2d> convs_;
  std::vector<BatchNorm2d> bns_;
};
TORCH_MODULE(ConvStage);

// Two conv stages and a two-layer classifier head. The teacher and the
// student differ only in width, depth and head size.
class CnnImpl : public ZooModule {
 public:
  CnnImpl(const ZooInput& input, int64_t width, int64_t convs_per_stage,
          int64_t hidden, double dropout)
      : stage1_(register_module(
            "stage1", ConvStage(input.input_shape[0], width, convs_per_stage))),
        stage2_(register_module("stage2",
                                ConvStage(width, 2 * width, convs_per_stage))),
        fc1_(register_module("fc1",
                             Linear(2 * width * (input.input_shape[1] / 4) *
                                        (input.input_shape[2] / 4),
                                    hidden))),
        dropout_(register_module("dropout", Dropout(dropout))),
        fc2_(register_module("fc2", Linear(hidden, input.num_classes))) {}

  torch::Tensor forward(torch::Tensor x) override {
    x = stage2_(stage1_(x)).flatten(1);
    x = dropout_(torch::relu(fc1_(x)));
    return fc2_(x);
  }

  std::vector<LayerOp> Layers() override {
    std::vector<LayerOp> out;
    stage1_->AppendLayers("stage1", out);
    stage2_->AppendLayers("stage2", out);
    out.push_back({LayerOp::Kind::kFlatten, "", nullptr});
    out.push_back({LayerOp::Kind::kLinear, "fc1", fc1_.ptr()});
    out.push_back({LayerOp::Kind::kRelu, "", nullptr});
    out.push_back({LayerOp::Kind::kDropout, "dropout", dropout_.ptr()});
    out.push_back({LayerOp::Kind::kLinear, "fc2", fc2_.ptr()});
    return out;
  }

 private:
  ConvStage stage1_;
  ConvStage stage2_;
  Linear fc1_;
  Dropout dropout_;
  Linear fc2_;
};
TORCH_MODULE(Cnn);

class MlpImpl : public ZooModule {
 public:
  MlpImpl(const ZooInput& input, int64_t hidden1, int64_t hidden2,
          double dropout)
      : fc1_(register_module(
            "fc1", Linear(input.input_shape[0] * input.input_shape[1] *
                              input.input_shape[2],
                          hidden1))),
        fc2_(register_module("fc2", Linear(hidden1, hidden2))),
        fc3_(register_module("fc3", Linear(hidden2, input.num_classes))),
        dropout_(register_module("dropout", Dropout(dropout))) {}

  torch::Tensor forward(torch::Tensor x) override {
    x = dropout_(torch::relu(fc1_(x.flatten(1))));
    x = dropout_(torch::relu(fc2_(x)));
    return fc3_(x);
  }

  std::vector<LayerOp> Layers() override {
    std::vector<LayerOp> out = {
        {LayerOp::Kind::kFlatten, "", nullptr},
        {LayerOp::Kind::kLinear, "fc1", fc1_.ptr()},
        {LayerOp::Kind::kRelu, "", nullptr},
        {LayerOp::Kind::kDropout, "dropout", dropout_.ptr()},
        {LayerOp::Kind::kLinear, "fc2", fc2_.ptr()},
        {LayerOp::Kind::kRelu, "", nullptr},
        {LayerOp::Kind::kDropout, "dropout", dropout_.ptr()},
        {LayerOp::Kind::kLinear, "fc3", fc3_.ptr()}};
    return out;
  }

 private:
  Linear fc1_;
  Linear fc2_;
  Linear fc3_;
  Dropout dropout_;
};
TORCH_MODULE(Mlp);

const std::vector<ZooEntry>& Entries() {
  static const auto* entries = new std::vector<ZooEntry>{
      {"cnn_student",
       "2-stage CNN under 100K parameters (conv-BN-ReLU-pool x2, FC head)",
       {{"width", 16, 4, 256, "channels of the first stage (second: 2x)"},
        {"convs_per_stage", 1, 1, 4, "conv layers per stage"},
        {"hidden", 48, 8, 4096, "units of the hidden FC layer"},
        {"dropout", 0.1, 0, 0.9, "dropout before the last layer"}}},
      {"cnn_teacher",
       "2-stage CNN with ~1M parameters, BatchNorm and dropout",
       {{"width", 32, 4, 256, "channels of the first stage (second: 2x)"},
        {"convs_per_stage", 1, 1, 4, "conv layers per stage"},
        {"hidden", 320, 8, 4096, "units of the hidden FC layer"},
        {"dropout", 0.3, 0, 0.9, "dropout before the last layer"}}},
      {"gpt",
       "causal transformer language model (pre-LayerNorm, GELU MLP, learned "
       "positions; GPT-2 / nanoGPT style)",
       {{"layers", 4, 1, 64, "transformer blocks"},
        {"heads", 4, 1, 64, "attention heads (must divide d_model)"},
        {"d_model", 128, 8, 8192, "width of the residual stream"},
        {"d_ff", 512, 8, 32768, "units of each block's MLP"},
        {"context", 256, 1, 65536,
         "longest sequence (position embeddings); >= the data's seq_len"},
        {"dropout", 0, 0, 0.9, "dropout on embeddings, attention, residuals"},
        {"tied_embedding", 1, 0, 1,
         "1: the output head is the token embedding; 0: its own weight"}},
       /*language_model=*/true},
      {"mlp",
       "two hidden layers with ReLU (Fashion-MNIST's MLP 256-128 baseline)",
       {{"hidden1", 256, 1, 8192, "units of the first hidden layer"},
        {"hidden2", 128, 1, 8192, "units of the second hidden layer"},
        {"dropout", 0, 0, 0.9, "dropout after each hidden layer"}}},
  };
  return *entries;
}

}  // namespace

const std::vector<ZooEntry>& ZooEntries() { return Entries(); }

absl::StatusOr<std::shared_ptr<ZooModule>> CreateZooModel(
    const std::string& arch, const std::map<std::string, double>& options,
    const ZooInput& input) {
  const auto& entries = Entries();
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const ZooEntry& e) { return e.arch == arch; });
  if (it == entries.end()) {
    std::vector<std::string> names;
    for (const auto& e : entries) names.push_back(e.arch);
    return absl::NotFoundError(
        absl::StrCat("unknown model architecture '", arch,
                     "'; known architectures: ", absl::StrJoin(names, ", ")));
  }
  std::map<std::string, double> values;
  for (const auto& opt : it->options) values[opt.name] = opt.default_value;
  for (const auto& [name, value] : options) {
    auto spec =
        std::find_if(it->options.begin(), it->options.end(),
                     [&](const ZooOption& o) { return o.name == name; });
    if (spec == it->options.end()) {
      std::vector<std::string> names;
      for (const auto& o : it->options) names.push_back(o.name);
      return absl::InvalidArgumentError(
          absl::StrCat("model '", arch, "' has no option '", name,
                       "'; its options: ", absl::StrJoin(names, ", ")));
    }
    if (!(value >= spec->min_value && value <= spec->max_value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", arch, "' option '", name, "' = ", value, " is outside [",
          spec->min_value, ", ", spec->max_value, "]"));
    }
    values[name] = value;
  }
  auto as_int = [&](const char* name) {
    return static_cast<int64_t>(std::llround(values[name]));
  };
  if (it->language_model != input.tokens) {
    return absl::InvalidArgumentError(
        it->language_model
            ? absl::StrCat("model '", arch,
                           "' is a language model but the data are images; "
                           "use a token dataset (data.dataset: \"tokens\")")
            : absl::StrCat("model '", arch,
                           "' is an image model but the data are token "
                           "windows; use a language model such as 'gpt'"));
  }
  if (it->language_model) {
    GptOptions o;
    o.vocab_size = input.num_classes;
    o.layers = as_int("layers");
    o.heads = as_int("heads");
    o.d_model = as_int("d_model");
    o.d_ff = as_int("d_ff");
    o.context = as_int("context");
    o.dropout = values["dropout"];
    o.tied_embedding = as_int("tied_embedding") != 0;
    if (o.d_model % o.heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", arch, "': heads ", o.heads,
                       " does not divide d_model ", o.d_model));
    }
    if (input.input_shape.size() != 1 || input.num_classes < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", arch, "' needs token windows [S] and a vocabulary"));
    }
    if (input.input_shape[0] > o.context) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", arch, "' has a context of ", o.context,
          " tokens but the data's windows are ", input.input_shape[0],
          " long; raise its 'context' option or lower data.seq_len"));
    }
    return TorchCall(
        absl::StrCat("building model '", arch, "'"),
        [&]() -> std::shared_ptr<ZooModule> { return Gpt(o).ptr(); });
  }
  if (input.input_shape.size() != 3 || input.num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", arch, "' needs [C, H, W] inputs and at least 2 classes"));
  }
  return TorchCall(absl::StrCat("building model '", arch, "'"),
                   [&]() -> std::shared_ptr<ZooModule> {
                     if (arch == "mlp") {
                       return Mlp(input, as_int("hidden1"), as_int("hidden2"),
                                  values["dropout"])
                           .ptr();
                     }
                     return Cnn(input, as_int("width"),
                                as_int("convs_per_stage"), as_int("hidden"),
                                values["dropout"])
                         .ptr();
                   });
}

}  // namespace distill::student
