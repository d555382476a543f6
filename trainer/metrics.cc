#include "trainer/internal/metrics.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"

namespace distill::trainer {

absl::Status MetricsWriter::Open(const std::string& run_dir) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create run folder ", run_dir, ": ", ec.message()));
  }
  path_ = (std::filesystem::path(run_dir) / "metrics.jsonl").string();
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ", path_, " for appending"));
  }
  return absl::OkStatus();
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status MetricsWriter::Write(const nlohmann::json& record) {
  if (file_ == nullptr) return absl::OkStatus();
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0) {
    return absl::DataLossError(absl::StrCat("cannot write to ", path_));
  }
  return absl::OkStatus();
}

absl::Status WriteJsonFile(const std::string& path,
                           const nlohmann::json& value) {
  return WriteStringAtomically(path, value.dump(2) + "\n");
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace distill::trainer
