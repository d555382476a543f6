// IDX files written byte by byte (the data tests' fixtures, headers that
// lie included), and id ranges. For tests only.
#ifndef DISTILL_COMMON_TESTING_IDX_FILES_H_
#define DISTILL_COMMON_TESTING_IDX_FILES_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

namespace distill::testing {

// An IDX file's bytes: magic (0, 0, `type`, rank), big-endian dims, payload.
inline std::vector<uint8_t> IdxBytes(uint8_t type,
                                     const std::vector<uint32_t>& dims,
                                     const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (const uint32_t d : dims) {
    bytes.push_back(d >> 24);
    bytes.push_back(d >> 16);
    bytes.push_back(d >> 8);
    bytes.push_back(d);
  }
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

inline void WriteRaw(const std::string& path,
                     const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  ASSERT_TRUE(out.good()) << path;
}

// 0, 1, ..., n - 1.
inline std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_IDX_FILES_H_
