#include "data/idx.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/testing/idx_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::IdxBytes;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::distill::testing::WriteRaw;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class IdxTest : public ::distill::testing::ScratchDirTest {
 protected:
  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }
};

void WriteGzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), bytes.size()),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

const std::vector<uint8_t> kPayload = {1, 2, 3, 4, 5, 6, 250, 0, 255, 7, 8, 9};

TEST_F(IdxTest, ReadsRawFile) {
  WriteRaw(Path("a.idx"), IdxBytes(0x08, {2, 3, 2}, kPayload));
  absl::StatusOr<IdxArray> array = ReadIdxFile(Path("a.idx"));
  ASSERT_THAT(array, IsOk());
  EXPECT_THAT(array->dims, ElementsAre(2, 3, 2));
  EXPECT_EQ(array->data, kPayload);
}

TEST_F(IdxTest, ReadsGzipFile) {
  WriteGzip(Path("a.idx.gz"), IdxBytes(0x08, {12}, kPayload));
  absl::StatusOr<IdxArray> array = ReadIdxFile(Path("a.idx.gz"));
  ASSERT_THAT(array, IsOk());
  EXPECT_THAT(array->dims, ElementsAre(12));
  EXPECT_EQ(array->data, kPayload);
}

TEST_F(IdxTest, ReadsEmptyArray) {
  WriteRaw(Path("empty.idx"), IdxBytes(0x08, {0, 28, 28}, {}));
  absl::StatusOr<IdxArray> array = ReadIdxFile(Path("empty.idx"));
  ASSERT_THAT(array, IsOk());
  EXPECT_THAT(array->dims, ElementsAre(0, 28, 28));
  EXPECT_TRUE(array->data.empty());
}

TEST_F(IdxTest, TruncatedRawPayloadIsDataLoss) {
  const std::vector<uint8_t> short_payload(kPayload.begin(),
                                           kPayload.end() - 3);
  WriteRaw(Path("short.idx"), IdxBytes(0x08, {2, 3, 2}, short_payload));
  EXPECT_THAT(
      ReadIdxFile(Path("short.idx")),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("truncated"), HasSubstr(Path("short.idx")),
                     HasSubstr("expected 12"), HasSubstr("found 9"))));
}

TEST_F(IdxTest, TruncatedGzipStreamIsDataLoss) {
  // A gzip stream cut in the middle, as by an interrupted download.
  const std::vector<uint8_t> payload(5000, 42);
  WriteGzip(Path("full.gz"), IdxBytes(0x08, {5000}, payload));
  std::ifstream in(Path("full.gz"), std::ios::binary);
  std::vector<uint8_t> compressed((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  ASSERT_GT(compressed.size(), 20u);
  compressed.resize(compressed.size() / 2);
  WriteRaw(Path("cut.gz"), compressed);
  EXPECT_THAT(
      ReadIdxFile(Path("cut.gz")),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("truncated"), HasSubstr(Path("cut.gz")))));
}

TEST_F(IdxTest, TruncatedHeaderIsDataLoss) {
  std::vector<uint8_t> bytes = IdxBytes(0x08, {2, 3, 2}, {});
  bytes.resize(9);
  WriteRaw(Path("header.idx"), bytes);
  EXPECT_THAT(
      ReadIdxFile(Path("header.idx")),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("truncated"), HasSubstr(Path("header.idx")))));
}

// A 116-byte file whose header claims 10^9 images of 28 x 28: DataLoss
// naming both sizes, not an allocation of the claimed 784 GB.
TEST_F(IdxTest, HeaderClaimingABillionImagesIsDataLoss) {
  const std::vector<uint8_t> payload(100, 7);
  WriteRaw(Path("lie.idx"), IdxBytes(0x08, {1000000000, 28, 28}, payload));
  ASSERT_EQ(std::filesystem::file_size(Path("lie.idx")), 116u);
  EXPECT_THAT(ReadIdxFile(Path("lie.idx")).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("lie.idx: truncated: expected 784000000000 "
                                 "bytes of data, found 100")));
}

// A header claiming 2 * 10^6 images (1.57 GB) over 100 bytes of data, read
// in a child whose address space is capped 256 MiB above what it has: the
// reader must fail with DataLoss, not die of an allocation the data never
// justified.
TEST_F(IdxTest, LyingHeaderCostsNoMoreMemoryThanTheData) {
  const std::vector<uint8_t> payload(100, 7);
  WriteGzip(Path("lie.idx.gz"), IdxBytes(0x08, {2000000, 28, 28}, payload));
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::ifstream status("/proc/self/status");
    std::string line;
    uint64_t vm_kb = 0;
    while (std::getline(status, line)) {
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
    }
    const rlim_t cap = (vm_kb << 10) + (rlim_t{256} << 20);
    const rlimit limit = {cap, cap};
    if (vm_kb == 0 || setrlimit(RLIMIT_AS, &limit) != 0) _exit(100);
    const absl::Status read = ReadIdxFile(Path("lie.idx.gz")).status();
    const bool expected =
        read.code() == absl::StatusCode::kDataLoss &&
        absl::StrContains(read.message(),
                          "expected 1568000000 bytes of data, found 100");
    _exit(expected ? 0 : 101);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus))
      << "the reader died of signal " << WTERMSIG(wstatus);
  EXPECT_EQ(WEXITSTATUS(wstatus), 0)
      << "100: the cap could not be set; 101: another status";
}

TEST_F(IdxTest, TrailingBytesAreDataLoss) {
  std::vector<uint8_t> payload = kPayload;
  payload.push_back(99);
  WriteRaw(Path("long.idx"), IdxBytes(0x08, {12}, payload));
  EXPECT_THAT(ReadIdxFile(Path("long.idx")),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("trailing"), HasSubstr(Path("long.idx")),
                             HasSubstr("expected 12"), HasSubstr("found 13"))));
}

TEST_F(IdxTest, BadMagicIsDataLoss) {
  std::vector<uint8_t> bytes = IdxBytes(0x08, {12}, kPayload);
  bytes[0] = 0x50;  // "PK", as if a zip archive had been saved instead.
  bytes[1] = 0x4b;
  WriteRaw(Path("zip.idx"), bytes);
  EXPECT_THAT(ReadIdxFile(Path("zip.idx")),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("magic"), HasSubstr(Path("zip.idx")))));
}

TEST_F(IdxTest, UnknownTypeCodeIsDataLoss) {
  WriteRaw(Path("type.idx"), IdxBytes(0x42, {12}, kPayload));
  EXPECT_THAT(ReadIdxFile(Path("type.idx")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
}

TEST_F(IdxTest, NonUnsignedByteTypeIsUnimplemented) {
  // Type 0x0D (float32): a valid IDX file the reader does not support.
  WriteRaw(Path("float.idx"), IdxBytes(0x0D, {3}, std::vector<uint8_t>(12, 0)));
  EXPECT_THAT(ReadIdxFile(Path("float.idx")),
              StatusIs(absl::StatusCode::kUnimplemented,
                       AllOf(HasSubstr("0x0d"), HasSubstr(Path("float.idx")))));
}

TEST_F(IdxTest, MissingFileIsNotFound) {
  EXPECT_THAT(
      ReadIdxFile(Path("nope.idx")),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("nope.idx"))));
}

}  // namespace
}  // namespace distill::data
