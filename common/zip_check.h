// Checks a zip archive (LibTorch's checkpoint, weights and TorchScript
// files are zip archives) before LibTorch reads it. LibTorch 1.13 reads
// archives without checking their CRC-32s, and some damaged ones crash it
// (SIGSEGV in its type parser, found by tests/fuzz/checkpoint_loader) rather
// than throw. Stateless; safe from any thread.
#ifndef DISTILL_COMMON_ZIP_CHECK_H_
#define DISTILL_COMMON_ZIP_CHECK_H_

#include <string>

#include "absl/status/status.h"

namespace distill {

// OK when `path` is a consistent zip archive every entry of which reads
// back whole and matches the CRC-32 its central directory records.
// NotFound when the file does not exist; DataLoss naming the path (and the
// entry, when one is damaged) otherwise. Reads the whole file once.
absl::Status CheckZipArchive(const std::string& path);

}  // namespace distill

#endif  // DISTILL_COMMON_ZIP_CHECK_H_
