// Run outputs a user reads: metrics as JSON Lines (<run_dir>/metrics.jsonl,
// one object per line, appended across resumes), the final summary.json
// (written atomically), and the live progress line. Not thread-safe: the
// training loop owns one MetricsWriter.
#ifndef DISTILL_TRAINER_INTERNAL_METRICS_H_
#define DISTILL_TRAINER_INTERNAL_METRICS_H_

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"

namespace distill::trainer {

class MetricsWriter {
 public:
  // Opens <run_dir>/metrics.jsonl for appending; PermissionDenied when the
  // folder cannot be created or the file opened.
  absl::Status Open(const std::string& run_dir);
  ~MetricsWriter();

  // Appends one record (flushed, so a crash loses at most the current line).
  absl::Status Write(const nlohmann::json& record);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

// Writes `value` to `path` as indented JSON, atomically.
absl::Status WriteJsonFile(const std::string& path,
                           const nlohmann::json& value);

// "1:02:03" or "2:03" for a number of seconds.
std::string FormatDuration(double seconds);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_METRICS_H_
