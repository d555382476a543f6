#include "data/fashion_mnist.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/idx.h"

namespace distill::data {
namespace {

constexpr int64_t kNumClasses = 10;
constexpr int64_t kRows = 28;
constexpr int64_t kCols = 28;

// The whole split lives in two tensors (47 MB of float for the training
// images), so Get is an index_select and never touches the files again.
class FashionMnistDataset final : public Dataset {
 public:
  FashionMnistDataset(std::string name, torch::Tensor images,
                      torch::Tensor labels, float background_value)
      : name_(std::move(name)),
        images_(std::move(images)),
        labels_(std::move(labels)),
        background_value_(background_value) {}

  int64_t size() const override { return labels_.size(0); }
  int64_t num_classes() const override { return kNumClasses; }
  std::vector<int64_t> input_shape() const override {
    return {1, kRows, kCols};
  }
  std::string name() const override { return name_; }
  float background_value() const override { return background_value_; }

  absl::StatusOr<Batch> Get(absl::Span<const int64_t> ids) const override {
    const int64_t n = size();
    for (const int64_t id : ids) {
      if (id < 0 || id >= n) {
        return absl::OutOfRangeError(absl::StrCat(name_, ": sample id ", id,
                                                  " is outside [0, ", n, ")"));
      }
    }
    return TorchCall(absl::StrCat(name_, ": Get"), [&]() -> Batch {
      Batch batch;
      batch.ids = torch::tensor(
          torch::ArrayRef<int64_t>(ids.data(), ids.size()), torch::kLong);
      batch.inputs = images_.index_select(0, batch.ids);
      batch.labels = labels_.index_select(0, batch.ids);
      return batch;
    });
  }

 private:
  const std::string name_;
  const torch::Tensor images_;  // float [N, 1, 28, 28], normalized
  const torch::Tensor labels_;  // int64 [N]
  const float background_value_;
};

// The package ships the .gz files; a hand-unpacked copy has the raw names.
absl::StatusOr<std::string> FindFile(const std::string& dir,
                                     const std::string& name) {
  const std::string gz = absl::StrCat(dir, "/", name, ".gz");
  const std::string raw = absl::StrCat(dir, "/", name);
  std::error_code error;
  if (std::filesystem::exists(gz, error)) return gz;
  if (std::filesystem::exists(raw, error)) return raw;
  return absl::NotFoundError(
      absl::StrCat(gz, ": no such file (nor ", raw, ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Dataset>> LoadFashionMnist(
    const FashionMnistOptions& options) {
  if (options.limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fashion-mnist: limit must be >= 0, got ", options.limit));
  }
  if (!(options.stddev > 0) || !std::isfinite(options.mean)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fashion-mnist: normalization needs a finite mean and stddev > 0, "
        "got mean ",
        options.mean, " stddev ", options.stddev));
  }
  std::error_code error;
  if (!std::filesystem::is_directory(options.dir, error)) {
    return absl::NotFoundError(
        absl::StrCat(options.dir, ": no such dataset directory"));
  }
  const std::string prefix = options.train ? "train" : "t10k";
  DISTILL_ASSIGN_OR_RETURN(
      const std::string images_path,
      FindFile(options.dir, absl::StrCat(prefix, "-images-idx3-ubyte")));
  DISTILL_ASSIGN_OR_RETURN(
      const std::string labels_path,
      FindFile(options.dir, absl::StrCat(prefix, "-labels-idx1-ubyte")));

  DISTILL_ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  DISTILL_ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));

  if (images.dims.size() != 3 || images.dims[1] != kRows ||
      images.dims[2] != kCols) {
    std::string dims;
    for (const int64_t d : images.dims) {
      absl::StrAppend(&dims, dims.empty() ? "" : "x", d);
    }
    return absl::DataLossError(absl::StrCat(
        images_path, ": expected images of shape Nx28x28, found ", dims));
  }
  if (labels.dims.size() != 1) {
    return absl::DataLossError(
        absl::StrCat(labels_path, ": expected a 1-D label array, found ",
                     labels.dims.size(), " dimensions"));
  }
  if (images.dims[0] != labels.dims[0]) {
    return absl::DataLossError(
        absl::StrCat(images_path, " holds ", images.dims[0], " images but ",
                     labels_path, " holds ", labels.dims[0], " labels"));
  }
  const int64_t count = options.limit > 0
                            ? std::min(options.limit, labels.dims[0])
                            : labels.dims[0];
  for (int64_t i = 0; i < count; ++i) {
    if (labels.data[i] >= kNumClasses) {
      return absl::DataLossError(
          absl::StrCat(labels_path, ": label ", labels.data[i], " of sample ",
                       i, " is outside [0, ", kNumClasses, ")"));
    }
  }

  const std::string name =
      absl::StrCat("fashion-mnist ", options.train ? "train" : "test");
  const float background = (0.0f - options.mean) / options.stddev;
  return TorchCall(
      absl::StrCat(name, ": building tensors"),
      [&]() -> std::unique_ptr<Dataset> {
        // from_blob borrows the vectors; the conversions below copy out of
        // them before they go away.
        torch::Tensor image_tensor =
            torch::from_blob(images.data.data(), {count, 1, kRows, kCols},
                             torch::kUInt8)
                .to(torch::kFloat)
                .div_(255.0f)
                .sub_(options.mean)
                .div_(options.stddev);
        torch::Tensor label_tensor =
            torch::from_blob(labels.data.data(), {count}, torch::kUInt8)
                .to(torch::kLong);
        return std::make_unique<FashionMnistDataset>(
            name, std::move(image_tensor), std::move(label_tensor), background);
      });
}

}  // namespace distill::data
