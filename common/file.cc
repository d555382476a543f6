#include "common/file.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace distill {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

absl::Status WriteFileAtomically(
    const std::string& path,
    const std::function<absl::Status(const std::string& tmp)>& write) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  absl::Status status = write(tmp);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status =
        absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

absl::Status WriteStringAtomically(const std::string& path,
                                   absl::string_view bytes) {
  return WriteFileAtomically(path, [&](const std::string& tmp) -> absl::Status {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
    return absl::OkStatus();
  });
}

}  // namespace distill
