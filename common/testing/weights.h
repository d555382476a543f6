// Comparing trained models by their weight files (model.pt or a
// checkpoint): two runs that should have trained the same model must end
// with the same numbers. For tests only.
#ifndef DISTILL_COMMON_TESTING_WEIGHTS_H_
#define DISTILL_COMMON_TESTING_WEIGHTS_H_

#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "student/model.h"
#include "student/zoo.h"

namespace distill::testing {

// Fashion-MNIST's shape: one 28x28 channel, 10 classes.
inline const student::ZooInput kFashionMnistInput{{1, 28, 28}, 10};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Which tensors of a model LoadWeights returns. Buffers (BatchNorm's running
// statistics) follow rank 0 in a data-parallel run, so runs on different
// numbers of ranks agree on parameters only.
enum class Tensors { kParameters, kParametersAndBuffers };

// The parameters (then the buffers) of `spec` loaded from `file`; a test
// failure (and nothing) when the file does not load.
NamedTensors LoadWeights(const student::ModelSpec& spec,
                         const std::filesystem::path& file,
                         Tensors which = Tensors::kParameters,
                         const student::ZooInput& input = kFashionMnistInput);

// The largest absolute difference between the tensors of `a` and `b`, name
// by name (NaN when a value is NaN); a test failure (and infinity) when the
// names or shapes differ.
double MaxDifference(const NamedTensors& a, const NamedTensors& b);

// MaxDifference of the parameters of `arch` (default options) in two files.
double WeightDistance(const std::string& arch, const std::filesystem::path& a,
                      const std::filesystem::path& b);

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_WEIGHTS_H_
