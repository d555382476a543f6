// Fuzzes trainer::LoadCheckpoint (trainer/internal/checkpoint.h) with
// arbitrary file contents: a checkpoint cut short by a full disk, flipped
// by a bad sector, or written by someone else. Each either restores the
// model, optimizer and position or gives FailedPrecondition (another
// model) or DataLoss (unreadable, incomplete) naming the file; never a
// crash or an abort. The seeds are checkpoints SaveCheckpoint wrote.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "student/model.h"
#include "tests/fuzz/fuzz_support.h"
#include "trainer/internal/checkpoint.h"

namespace {

using distill::fuzz::Fail;
constexpr char kTarget[] = "checkpoint_loader_fuzzer";

std::unique_ptr<distill::student::Model> MakeModel(int hidden) {
  distill::student::ModelSpec spec;
  spec.arch = "mlp";
  spec.options = {{"hidden1", hidden}, {"hidden2", 4}};
  distill::student::ZooInput input;
  input.input_shape = {1, 3, 3};
  input.num_classes = 3;
  auto model = distill::student::Model::Create(spec, input);
  if (!model.ok()) Fail(kTarget, model.status().ToString());
  return *std::move(model);
}

struct Job {
  std::unique_ptr<distill::student::Model> model = MakeModel(6);
  torch::optim::AdamW optimizer{model->parameters(),
                                torch::optim::AdamWOptions(1e-3)};
};

void WriteSeeds(const std::string& dir) {
  torch::manual_seed(7);  // the same seeds every time
  namespace fs = std::filesystem;
  const fs::path run_dir = fs::temp_directory_path() /
                           ("checkpoint_seeds_" + std::to_string(getpid()));
  Job job;
  auto save = [&](const std::string& name, int64_t step) {
    distill::trainer::TrainPosition position{1, 32, step};
    auto path = distill::trainer::SaveCheckpoint(run_dir.string(), *job.model,
                                                 job.optimizer, position, 1);
    if (!path.ok()) Fail(kTarget, path.status().ToString());
    std::ifstream in(*path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    distill::fuzz::WriteSeed(dir, name, bytes.str());
  };
  save("fresh.pt", 0);
  // After a step the optimizer holds its moments too.
  job.optimizer.zero_grad();
  job.model->forward(torch::rand({2, 1, 3, 3})).sum().backward();
  job.optimizer.step();
  save("after_a_step.pt", 1);
  fs::remove_all(run_dir);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  distill::fuzz::WriteSeedsIfAsked(*argc, *argv, WriteSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Job* job = new Job;
  distill::fuzz::MemoryFile file(data, size);
  auto position = distill::trainer::LoadCheckpoint(file.path(), *job->model,
                                                   job->optimizer);
  if (position.ok()) return 0;
  const auto code = position.status().code();
  if (code != absl::StatusCode::kDataLoss &&
      code != absl::StatusCode::kFailedPrecondition) {
    Fail(kTarget, "an error that is neither DataLoss nor FailedPrecondition: " +
                      position.status().ToString());
  }
  if (position.status().message().find(file.path()) == std::string::npos) {
    Fail(kTarget, "an error that does not name the file: " +
                      position.status().ToString());
  }
  return 0;
}
