// Fashion-MNIST (and MNIST, which shares the layout) as an in-memory Dataset,
// loaded from the IDX files that the dataset-fashion-mnist package installs.
#ifndef DISTILL_DATA_FASHION_MNIST_H_
#define DISTILL_DATA_FASHION_MNIST_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace distill::data {

struct FashionMnistOptions {
  // Folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
  // Default: the dataset-fashion-mnist package's install location.
  std::string dir = "/usr/share/datasets/fashion-mnist";
  // Default: true (the 60k training split); false reads the 10k test split.
  bool train = true;
  // Keep only the first `limit` samples; 0 keeps all. Default: 0.
  int64_t limit = 0;
  // Normalization (x/255 - mean) / stddev. Defaults: Fashion-MNIST's own.
  float mean = 0.2860f;
  float stddev = 0.3530f;
};

// Errors name the file: NotFound when a file is missing (neither the .gz nor
// the raw name exists), DataLoss for corrupt or truncated files, images and
// labels of different counts, or a label outside [0, 10).
absl::StatusOr<std::unique_ptr<Dataset>> LoadFashionMnist(
    const FashionMnistOptions& options);

}  // namespace distill::data

#endif  // DISTILL_DATA_FASHION_MNIST_H_
