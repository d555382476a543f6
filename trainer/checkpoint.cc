#include "trainer/internal/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "common/zip_check.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;

constexpr char kPrefix[] = "ckpt-";
constexpr char kSuffix[] = ".pt";

// Checkpoints in `run_dir` as (step, path), oldest first.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(
    const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kPrefix) || !absl::EndsWith(name, kSuffix)) {
      continue;
    }
    int64_t step = 0;
    if (absl::SimpleAtoi(
            name.substr(sizeof(kPrefix) - 1, name.size() - sizeof(kPrefix) + 1 -
                                                 sizeof(kSuffix) + 1),
            &step)) {
      out.emplace_back(step, entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

torch::Tensor GetRngState() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetRngState(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir,
                                           student::Model& model,
                                           torch::optim::Optimizer& optimizer,
                                           const TrainPosition& position,
                                           int keep) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot create checkpoint folder ", dir.string(), ": ", ec.message()));
  }
  const std::string path =
      (dir /
       absl::StrFormat("%s%09d%s", kPrefix, position.global_step, kSuffix))
          .string();
  DISTILL_RETURN_IF_ERROR(
      WriteFileAtomically(path, [&](const std::string& tmp) -> absl::Status {
        torch::serialize::OutputArchive archive;
        DISTILL_RETURN_IF_ERROR(model.Save(archive));
        return TorchCall(absl::StrCat("writing checkpoint ", path), [&] {
          torch::serialize::OutputArchive opt_archive;
          optimizer.save(opt_archive);
          archive.write("optimizer", opt_archive);
          archive.write("position/epoch", c10::IValue(position.epoch));
          archive.write("position/cursor", c10::IValue(position.cursor));
          archive.write("position/global_step",
                        c10::IValue(position.global_step));
          archive.write("rng/torch_cpu", GetRngState());
          if (position.sampled.tokens.defined()) {
            archive.write("position/sampled_tokens", position.sampled.tokens);
            archive.write("position/sampled_lengths", position.sampled.lengths);
            if (position.sampled.top_ids.defined()) {
              archive.write("position/sampled_top_ids",
                            position.sampled.top_ids);
            }
          }
          archive.save_to(tmp);
        });
      }));
  auto all = ListCheckpoints(run_dir);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    std::remove(all[i].second.c_str());
  }
  return path;
}

absl::StatusOr<TrainPosition> LoadCheckpoint(
    const std::string& path, student::Model& model,
    torch::optim::Optimizer& optimizer) {
  // LibTorch does not check the archive's CRC-32s and crashes on some
  // damaged ones: check them first.
  absl::Status read = CheckZipArchive(path);
  torch::serialize::InputArchive archive;
  if (read.ok()) {
    read = TorchCall(absl::StrCat("reading checkpoint ", path),
                     [&] { archive.load_from(path); });
  }
  if (!read.ok()) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint ", path, " is unreadable (", read.message(), ")"));
  }
  DISTILL_RETURN_IF_ERROR(
      model.Load(archive, absl::StrCat("checkpoint ", path)));
  TrainPosition position;
  absl::Status restored = TorchCall(
      absl::StrCat("restoring training state from checkpoint ", path), [&] {
        torch::serialize::InputArchive opt_archive;
        archive.read("optimizer", opt_archive);
        optimizer.load(opt_archive);
        c10::IValue v;
        archive.read("position/epoch", v);
        position.epoch = v.toInt();
        archive.read("position/cursor", v);
        position.cursor = v.toInt();
        archive.read("position/global_step", v);
        position.global_step = v.toInt();
        torch::Tensor rng;
        archive.read("rng/torch_cpu", rng);
        SetRngState(rng);
        // Present only when on-policy sampling had run ahead.
        torch::Tensor tokens, lengths, top_ids;
        if (archive.try_read("position/sampled_tokens", tokens) &&
            archive.try_read("position/sampled_lengths", lengths)) {
          archive.try_read("position/sampled_top_ids", top_ids);
          position.sampled = {tokens, lengths, top_ids};
        }
      });
  if (!restored.ok()) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint ", path, " is incomplete (", restored.message(), ")"));
  }
  return position;
}

absl::StatusOr<ResumePoint> LoadNewestCheckpoint(
    const std::string& run_dir, student::Model& model,
    torch::optim::Optimizer& optimizer) {
  ResumePoint point;
  const auto all = ListCheckpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    absl::StatusOr<TrainPosition> position =
        LoadCheckpoint(it->second, model, optimizer);
    if (position.ok()) {
      point.path = it->second;
      point.position = *position;
      return point;
    }
    if (position.status().code() != absl::StatusCode::kDataLoss) {
      return position.status();
    }
    point.skipped.push_back(std::string(position.status().message()));
  }
  if (!point.skipped.empty()) {
    return absl::DataLossError(
        absl::StrCat("no checkpoint in ", run_dir,
                     " reads back: ", absl::StrJoin(point.skipped, "; ")));
  }
  return point;
}

}  // namespace distill::trainer
