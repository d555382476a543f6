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

// Base of every zoo module: one tensor in ([N, C, H, W]), logits out.
class ZooModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
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
