// Whole-file reads and atomic writes, the one copy every module uses. A
// reader never sees a half-written file: writes go to a temporary file beside
// the target, which is then renamed over it. Stateless and thread-safe for
// distinct paths.
#ifndef DISTILL_COMMON_FILE_H_
#define DISTILL_COMMON_FILE_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace distill {

// The bytes of the file at `path`, read once (it may be a pipe). NotFound
// "cannot read <path>" when it cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Calls `write(tmp)` to fill a temporary file beside `path`, flushes it to
// disk (fsync), renames it over `path` and flushes the folder, so once this
// returns OK the new file survives a crash or power loss. On a failure
// before the rename the temporary file is removed and `path` is left as it
// was; the status is `write`'s, DataLoss for a failed flush, or Internal for
// the rename.
absl::Status WriteFileAtomically(
    const std::string& path,
    const std::function<absl::Status(const std::string& tmp)>& write);

// WriteFileAtomically of `bytes`; DataLoss "cannot write <tmp>" when they do
// not all reach the disk.
absl::Status WriteStringAtomically(const std::string& path,
                                   absl::string_view bytes);

}  // namespace distill

#endif  // DISTILL_COMMON_FILE_H_
