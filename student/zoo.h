// The model zoo: named architectures with numeric options: image
// classifiers (one tensor [N, C, H, W] in, logits [N, classes] out) and
// causal language models (token ids [N, S] in, logits [N, S, V] out). Each
// entry documents its options, defaults and bounds; unknown names and options
// are errors that list the known ones. Thread-safe: the table is immutable.
#ifndef DISTILL_STUDENT_ZOO_H_
#define DISTILL_STUDENT_ZOO_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace distill::student {

// One step of a zoo model's forward pass, for tools that rewrite a network
// layer by layer (the QAT stage, the ONNX exporter). Running a model's
// Layers() in order computes exactly its forward().
struct LayerOp {
  enum class Kind {
    kConv2d,       // module: torch::nn::Conv2dImpl
    kBatchNorm2d,  // module: torch::nn::BatchNorm2dImpl
    kBatchNorm1d,  // module: torch::nn::BatchNorm1dImpl
    kLinear,       // module: torch::nn::LinearImpl
    kRelu,
    kMaxPool2x2,  // 2x2 max pooling, stride 2
    kFlatten,     // flatten every dimension after the first
    kDropout,     // module: torch::nn::DropoutImpl (identity in eval)
  };
  Kind kind;
  // The module's dotted path (its parameters' prefix), e.g. "stage1.conv0";
  // empty for the functional ops (relu, pooling, flatten).
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
};

// Keys and values of the positions a language model has already seen, one
// [N, heads, positions, head_dim] tensor per layer, so generation costs one
// position per new token. Empty before the first call.
struct KvCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  // Positions cached so far.
  int64_t length() const {
    return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2);
  }
};

// Base of every zoo module: one tensor in, logits out.
class ZooModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // The forward pass as a flat list of ops sharing this model's modules
  // (image models; empty for language models).
  virtual std::vector<LayerOp> Layers() = 0;

  // Language models: forward(tokens) == Hidden(tokens, nullptr) @
  // HeadWeight()^T, split so that losses can run the output head chunk by
  // chunk over tokens and generation can reuse a KvCache.
  virtual bool is_language_model() const { return false; }
  // The longest sequence the model takes (0 for image models).
  virtual int64_t context_length() const { return 0; }
  // Final hidden states [N, s, H] of `tokens` [N, s], which follow the
  // `cache`'s positions when one is given (and are appended to it).
  virtual torch::Tensor Hidden(const torch::Tensor& tokens, KvCache* cache) {
    TORCH_CHECK(false, "not a language model");
  }
  // The output head's weight [V, H] (no bias).
  virtual torch::Tensor HeadWeight() {
    TORCH_CHECK(false, "not a language model");
  }
};

struct ZooOption {
  std::string name;
  double default_value;
  double min_value;
  double max_value;
  std::string description;
};

struct ZooEntry {
  std::string arch;
  std::string description;
  std::vector<ZooOption> options;
  // Takes token windows (true) or images (false).
  bool language_model = false;
};

// What every architecture needs to know about its data.
struct ZooInput {
  std::vector<int64_t> input_shape;  // {C, H, W}, or {S} for tokens
  int64_t num_classes = 0;           // classes, or the vocabulary size V
  // Token windows (int64 ids) rather than images.
  bool tokens = false;
};

// All entries, sorted by name.
const std::vector<ZooEntry>& ZooEntries();

// Builds `arch` with `options` (missing ones take their defaults).
// NotFound for an unknown arch (listing the known ones); InvalidArgument for
// an unknown option or one out of its bounds, naming it, and for an image
// architecture on token data or a language model on images (or a context
// shorter than the data's windows).
absl::StatusOr<std::shared_ptr<ZooModule>> CreateZooModel(
    const std::string& arch, const std::map<std::string, double>& options,
    const ZooInput& input);

}  // namespace distill::student

#endif  // DISTILL_STUDENT_ZOO_H_
