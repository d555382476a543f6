// Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or raw.
// Stateless; safe to call from any thread.
#ifndef DISTILL_DATA_IDX_H_
#define DISTILL_DATA_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace distill::data {

// An unsigned-byte IDX array: `dims` from the header, `data` row-major.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads `path`, decompressing it when it starts with the gzip magic.
// Errors: NotFound (missing file), DataLoss (bad magic, truncated payload or
// trailing bytes, with expected and actual sizes), Unimplemented (an element
// type other than unsigned byte). Every message names the file.
absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path);

}  // namespace distill::data

#endif  // DISTILL_DATA_IDX_H_
