#include "launch/line_prefixer.h"

#include <utility>

namespace distill::launch {

LinePrefixer::LinePrefixer(std::string prefix,
                           std::function<void(absl::string_view)> sink)
    : prefix_(std::move(prefix)), sink_(std::move(sink)) {}

void LinePrefixer::Feed(absl::string_view bytes) {
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    if (newline == absl::string_view::npos) {
      pending_.append(bytes.data(), bytes.size());
      return;
    }
    std::string line = prefix_;
    line += pending_;
    line.append(bytes.data(), newline + 1);
    pending_.clear();
    sink_(line);
    bytes.remove_prefix(newline + 1);
  }
}

void LinePrefixer::Flush() {
  if (pending_.empty()) return;
  std::string line = prefix_ + pending_ + "\n";
  pending_.clear();
  sink_(line);
}

}  // namespace distill::launch
