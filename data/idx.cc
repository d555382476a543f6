#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace distill::data {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;

// Owns a gzFile. zlib reads files without the gzip magic transparently, so
// one code path serves both the .gz and the raw files.
class GzReader {
 public:
  explicit GzReader(gzFile file) : file_(file) {}
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `size` bytes into `out`; fewer only at the end of the data.
  // A damaged gzip stream is DataLoss; a gzip stream cut short is reported as
  // a short read, like a truncated raw file.
  absl::StatusOr<size_t> Read(void* out, size_t size, const std::string& path) {
    auto* dst = static_cast<uint8_t*>(out);
    size_t done = 0;
    while (done < size) {
      // gzread takes an unsigned int length; stay well below its limit.
      const size_t chunk = std::min<size_t>(size - done, size_t{1} << 30);
      const int n = gzread(file_, dst + done, static_cast<unsigned>(chunk));
      if (n < 0) return ZlibError(path);
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    int code = Z_OK;
    gzerror(file_, &code);
    // Z_BUF_ERROR is zlib's "unexpected end of file" for a cut gzip stream;
    // the caller sees it as a short read.
    if (code != Z_OK && code != Z_BUF_ERROR) return ZlibError(path);
    return done;
  }

 private:
  absl::Status ZlibError(const std::string& path) {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_ERRNO) message = std::strerror(errno);
    return absl::DataLossError(
        absl::StrCat(path, ": corrupt gzip stream: ", message));
  }

  gzFile file_;
};

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Type codes the IDX format defines, so an unsupported but valid file is
// told apart from garbage.
bool IsKnownIdxType(uint8_t type) {
  switch (type) {
    case 0x08:  // unsigned byte
    case 0x09:  // signed byte
    case 0x0B:  // int16
    case 0x0C:  // int32
    case 0x0D:  // float32
    case 0x0E:  // float64
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    if (error != 0) {
      return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot open"));
    }
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": zlib could not allocate a reader"));
  }
  GzReader reader(file);
  // The larger buffer halves the read time of the 47 MB training images.
  gzbuffer(file, 1 << 17);

  uint8_t magic[4];
  DISTILL_ASSIGN_OR_RETURN(size_t got, reader.Read(magic, sizeof(magic), path));
  if (got < sizeof(magic)) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: the 4-byte IDX magic is incomplete (",
                     got, " bytes)"));
  }
  if (magic[0] != 0 || magic[1] != 0 || !IsKnownIdxType(magic[2]) ||
      magic[3] == 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": bad IDX magic 0x",
        absl::Hex(BigEndian32(magic), absl::kZeroPad8),
        " (expected 0x0000TTNN: element type TT, NN > 0 dimensions)"));
  }
  if (magic[2] != kTypeUnsignedByte) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": IDX element type 0x", absl::Hex(magic[2], absl::kZeroPad2),
        " is not supported; only unsigned byte (0x08) is"));
  }

  const int num_dims = magic[3];
  std::vector<uint8_t> header(4 * static_cast<size_t>(num_dims));
  DISTILL_ASSIGN_OR_RETURN(got,
                           reader.Read(header.data(), header.size(), path));
  if (got < header.size()) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: header expected ", header.size(),
                     " bytes of dimensions, found ", got));
  }

  IdxArray array;
  array.dims.reserve(num_dims);
  uint64_t num_elements = 1;
  for (int i = 0; i < num_dims; ++i) {
    const uint32_t dim = BigEndian32(&header[4 * i]);
    array.dims.push_back(dim);
    // A corrupt header must not turn into a multi-terabyte allocation; 2^40
    // is far beyond any real IDX file.
    if (dim != 0 && num_elements > (uint64_t{1} << 40) / dim) {
      return absl::DataLossError(
          absl::StrCat(path, ": IDX dimensions are implausibly large"));
    }
    num_elements *= dim;
  }

  // The header may lie: memory grows with the bytes that actually arrive,
  // one step at a time, never to the size the header claims up front (a
  // 116-byte file claiming 10^9 images must not allocate 784 GB).
  constexpr uint64_t kStep = uint64_t{64} << 20;
  while (array.data.size() < num_elements) {
    const size_t have = array.data.size();
    const size_t want = std::min<uint64_t>(num_elements - have, kStep);
    array.data.resize(have + want);
    DISTILL_ASSIGN_OR_RETURN(got,
                             reader.Read(array.data.data() + have, want, path));
    if (got < want) {
      return absl::DataLossError(
          absl::StrCat(path, ": truncated: expected ", num_elements,
                       " bytes of data, found ", have + got));
    }
  }
  // Trailing bytes mean the header and the payload disagree, so neither
  // can be trusted; count them for the message.
  uint64_t trailing = 0;
  uint8_t scratch[4096];
  do {
    DISTILL_ASSIGN_OR_RETURN(got, reader.Read(scratch, sizeof(scratch), path));
    trailing += got;
  } while (got == sizeof(scratch));
  if (trailing != 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": expected ", num_elements, " bytes of data, found ",
        num_elements + trailing, " (trailing bytes)"));
  }
  return array;
}

}  // namespace distill::data
