// The model zoo: named image-classification architectures with numeric
// options. Each entry documents its options, defaults and bounds; unknown
// names and options are errors that list the known ones. Thread-safe: the
// table is immutable.
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

// Base of every zoo module: one tensor in ([N, C, H, W]), logits out.
class ZooModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // The forward pass as a flat list of ops sharing this model's modules.
  virtual std::vector<LayerOp> Layers() = 0;
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
};

// What every architecture needs to know about its data.
struct ZooInput {
  std::vector<int64_t> input_shape;  // {C, H, W}
  int64_t num_classes = 0;
};

// All entries, sorted by name.
const std::vector<ZooEntry>& ZooEntries();

// Builds `arch` with `options` (missing ones take their defaults).
// NotFound for an unknown arch (listing the known ones); InvalidArgument for
// an unknown option or one out of its bounds, naming it.
absl::StatusOr<std::shared_ptr<ZooModule>> CreateZooModel(
    const std::string& arch, const std::map<std::string, double>& options,
    const ZooInput& input);

}  // namespace distill::student

#endif  // DISTILL_STUDENT_ZOO_H_
