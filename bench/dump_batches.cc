// Writes the first training batches exactly as the trainer's data path makes
// them (data::Sampler order, data::Loader with augmentation), so that
// bench/compare.py can check that the PyTorch reference
// (bench/reference/distill_reference.py) trains on the same samples, in the
// same order, with the same crops and flips.
//
// Output in --out: ids.json ([[id, ...] per batch]) and inputs.f32 (the
// batches' float32 inputs, concatenated, row-major [N, 1, 28, 28]).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "data/fashion_mnist.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "Fashion-MNIST folder.");
ABSL_FLAG(int64_t, train_limit, 0, "Use the first N training samples; 0: all.");
ABSL_FLAG(uint64_t, seed, 0, "The job's seed.");
ABSL_FLAG(int64_t, epoch, 0, "Epoch (0-based) whose batches are written.");
ABSL_FLAG(int64_t, batch_size, 128, "Samples per batch.");
ABSL_FLAG(int64_t, batches, 2, "Batches to write.");
ABSL_FLAG(bool, augment, false, "Random crop and flip as data.augment.");
ABSL_FLAG(int64_t, crop_padding, 2, "data.augment.crop_padding.");
ABSL_FLAG(bool, horizontal_flip, true, "data.augment.horizontal_flip.");
ABSL_FLAG(std::string, out, "", "Output folder (required).");

namespace {

absl::Status Dump() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  distill::data::FashionMnistOptions data_options;
  data_options.dir = absl::GetFlag(FLAGS_data_dir);
  data_options.limit = absl::GetFlag(FLAGS_train_limit);
  DISTILL_ASSIGN_OR_RETURN(auto dataset,
                           distill::data::LoadFashionMnist(data_options));

  distill::data::SamplerOptions sampler_options;
  sampler_options.seed = absl::GetFlag(FLAGS_seed);
  distill::data::Sampler sampler(dataset->size(), sampler_options);
  sampler.SetEpoch(absl::GetFlag(FLAGS_epoch));

  distill::data::LoaderOptions loader_options;
  loader_options.batch_size = absl::GetFlag(FLAGS_batch_size);
  loader_options.augment.enabled = absl::GetFlag(FLAGS_augment);
  loader_options.augment.crop_padding = absl::GetFlag(FLAGS_crop_padding);
  loader_options.augment.horizontal_flip = absl::GetFlag(FLAGS_horizontal_flip);
  loader_options.seed = sampler_options.seed;
  loader_options.epoch = absl::GetFlag(FLAGS_epoch);
  distill::data::Loader loader(*dataset, sampler.Remaining(), loader_options);

  std::filesystem::create_directories(out);
  std::ofstream inputs(std::filesystem::path(out) / "inputs.f32",
                       std::ios::binary | std::ios::trunc);
  nlohmann::json ids = nlohmann::json::array();
  for (int64_t b = 0; b < absl::GetFlag(FLAGS_batches); ++b) {
    DISTILL_ASSIGN_OR_RETURN(std::optional<distill::data::Batch> batch,
                             loader.Next());
    if (!batch) break;
    const torch::Tensor x = batch->inputs.contiguous();
    inputs.write(reinterpret_cast<const char*>(x.data_ptr<float>()),
                 static_cast<std::streamsize>(x.numel() * sizeof(float)));
    const torch::Tensor id = batch->ids.contiguous();
    ids.push_back(std::vector<int64_t>(id.data_ptr<int64_t>(),
                                       id.data_ptr<int64_t>() + id.numel()));
  }
  if (!inputs) {
    return absl::DataLossError(absl::StrCat("writing ", out, "/inputs.f32"));
  }
  std::ofstream(std::filesystem::path(out) / "ids.json") << ids.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = Dump();
  if (!status.ok()) {
    std::fprintf(stderr, "dump_batches: error: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
