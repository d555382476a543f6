// Fuzzes data::ReadIdxFile (data/idx.h) with arbitrary file contents, raw
// or gzip-compressed: every input must give an array whose dimensions match
// its bytes, or an error; never a crash, an abort or an allocation the bytes
// do not justify.
#include <zlib.h>

#include <cstdint>
#include <string>

#include "data/idx.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using distill::fuzz::Fail;

std::string Idx(const std::vector<uint32_t>& dims, size_t payload) {
  std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      bytes.push_back(static_cast<char>(d >> shift));
    }
  }
  for (size_t i = 0; i < payload; ++i)
    bytes.push_back(static_cast<char>(i * 37));
  return bytes;
}

std::string Gzip(const std::string& raw) {
  uLongf size = compressBound(raw.size()) + 32;
  std::string out(size, '\0');
  z_stream stream{};
  // windowBits 15 + 16: a gzip wrapper, as the .gz files are.
  if (deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    Fail("idx_reader_fuzzer", "deflateInit2 failed");
  }
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  stream.avail_in = raw.size();
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = size;
  if (deflate(&stream, Z_FINISH) != Z_STREAM_END) {
    Fail("idx_reader_fuzzer", "deflate failed");
  }
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// Labels [N] and images [N, H, W] as Fashion-MNIST's files are, raw and
// gzip-compressed, and a header that claims more than the file holds.
void WriteSeeds(const std::string& dir) {
  const std::string labels = Idx({6}, 6);
  const std::string images = Idx({2, 4, 3}, 24);
  distill::fuzz::WriteSeed(dir, "labels.idx", labels);
  distill::fuzz::WriteSeed(dir, "images.idx", images);
  distill::fuzz::WriteSeed(dir, "labels.idx.gz", Gzip(labels));
  distill::fuzz::WriteSeed(dir, "images.idx.gz", Gzip(images));
  distill::fuzz::WriteSeed(dir, "claims_more.idx",
                           Idx({1000000000, 28, 28}, 8));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  distill::fuzz::WriteSeedsIfAsked(*argc, *argv, WriteSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  distill::fuzz::MemoryFile file(data, size);
  auto array = distill::data::ReadIdxFile(file.path());
  if (!array.ok()) {
    if (array.status().message().find(file.path()) == std::string::npos) {
      Fail("idx_reader_fuzzer", "an error that does not name the file: " +
                                    array.status().ToString());
    }
    return 0;
  }
  uint64_t elements = 1;
  for (int64_t d : array->dims) elements *= static_cast<uint64_t>(d);
  if (array->dims.empty() || elements != array->data.size()) {
    Fail("idx_reader_fuzzer", "dimensions disagree with the data read");
  }
  return 0;
}
