#include "common/zip_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class ZipCheckTest : public ScratchDirTest {
 protected:
  // A LibTorch archive holding 64 floats of 1234.5 under "weight".
  std::string WriteArchive() {
    const std::string path = (dir_ / "archive.pt").string();
    torch::serialize::OutputArchive archive;
    archive.write("weight", torch::full({64}, 1234.5f));
    archive.save_to(path);
    return path;
  }

  static std::vector<char> Bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  static void Write(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
};

TEST_F(ZipCheckTest, AnArchiveLibTorchWrotePasses) {
  EXPECT_THAT(CheckZipArchive(WriteArchive()), IsOk());
}

// One flipped bit in a tensor's bytes: LibTorch would load the wrong value
// silently; the entry's CRC-32 tells.
TEST_F(ZipCheckTest, AFlippedBitInAnEntryIsDataLossNamingTheEntry) {
  const std::string path = WriteArchive();
  std::vector<char> bytes = Bytes(path);
  const float value = 1234.5f;
  char pattern[sizeof(value)];
  std::memcpy(pattern, &value, sizeof(value));
  auto at = std::search(bytes.begin(), bytes.end(), std::begin(pattern),
                        std::end(pattern));
  ASSERT_NE(at, bytes.end());
  *at ^= 1;
  Write(path, bytes);
  EXPECT_THAT(CheckZipArchive(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("data/0 is damaged"),
                             HasSubstr("CRC"))));
}

TEST_F(ZipCheckTest, ATruncatedArchiveIsDataLoss) {
  const std::string path = WriteArchive();
  fs::resize_file(path, fs::file_size(path) / 2);
  EXPECT_THAT(CheckZipArchive(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path),
                             HasSubstr("is not a whole zip archive"))));
}

TEST_F(ZipCheckTest, AMissingFileIsNotFound) {
  EXPECT_THAT(CheckZipArchive((dir_ / "none.pt").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("none.pt")));
}

// A checkpoint with one byte changed, found by the checkpoint fuzzer: given
// to LibTorch 1.13 it crashes the process (SIGSEGV in its type parser).
TEST_F(ZipCheckTest, TheArchiveThatCrashedLibTorchIsDataLoss) {
  const std::string path =
      testing::SourceDir() +
      "/tests/fuzz/regressions/checkpoint_loader/torch_type_parser_segv";
  ASSERT_TRUE(fs::exists(path));
  EXPECT_THAT(CheckZipArchive(path),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC")));
}

// Found by the checkpoint fuzzer: an entry whose directory states 4 GB
// for 228 bytes of data, CRC-32 intact; LibTorch allocates the stated size.
TEST_F(ZipCheckTest, AnEntryWhoseStatedSizeLiesIsDataLoss) {
  const std::string path =
      testing::SourceDir() +
      "/tests/fuzz/regressions/checkpoint_loader/stated_size_lies";
  ASSERT_TRUE(fs::exists(path));
  EXPECT_THAT(CheckZipArchive(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("holds 228 bytes but the archive's directory "
                                 "states 3976200420")));
}

}  // namespace
}  // namespace distill
