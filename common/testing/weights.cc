#include "common/testing/weights.h"

#include <gtest/gtest.h>

#include <limits>

namespace distill::testing {

NamedTensors LoadWeights(const student::ModelSpec& spec,
                         const std::filesystem::path& file, Tensors which,
                         const student::ZooInput& input) {
  auto model = student::Model::Create(spec, input);
  if (!model.ok()) {
    ADD_FAILURE() << model.status();
    return {};
  }
  const absl::Status loaded = (*model)->LoadFile(file.string());
  if (!loaded.ok()) {
    ADD_FAILURE() << loaded;
    return {};
  }
  NamedTensors tensors = (*model)->named_parameters();
  if (which == Tensors::kParametersAndBuffers) {
    for (auto& buffer : (*model)->named_buffers()) tensors.push_back(buffer);
  }
  return tensors;
}

double MaxDifference(const NamedTensors& a, const NamedTensors& b) {
  constexpr double kApart = std::numeric_limits<double>::infinity();
  if (a.size() != b.size() || a.empty()) {
    ADD_FAILURE() << "comparing " << a.size() << " tensors with " << b.size();
    return kApart;
  }
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first ||
        !a[i].second.sizes().equals(b[i].second.sizes())) {
      ADD_FAILURE() << "tensor " << i << " is " << a[i].first << " "
                    << a[i].second.sizes() << " in one and " << b[i].first
                    << " " << b[i].second.sizes() << " in the other";
      return kApart;
    }
    const double d =
        (a[i].second.to(torch::kDouble) - b[i].second.to(torch::kDouble))
            .abs()
            .max()
            .item<double>();
    if (std::isnan(d)) return d;
    worst = std::max(worst, d);
  }
  return worst;
}

double WeightDistance(const std::string& arch, const std::filesystem::path& a,
                      const std::filesystem::path& b) {
  const student::ModelSpec spec{arch, "", {}};
  return MaxDifference(LoadWeights(spec, a), LoadWeights(spec, b));
}

}  // namespace distill::testing
