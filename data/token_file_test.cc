#include "data/token_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::ScratchDirTest;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const std::string kSha(64, 'a');

class TokenFileTest : public ScratchDirTest {
 protected:
  std::string Bytes(const std::string& name) {
    return testing::ReadFile(dir_ / name);
  }
  std::string Put(const std::string& name, const std::string& bytes) {
    return Write(name, bytes).string();
  }
};

TEST_F(TokenFileTest, WritesTheDocumentedLayoutAndReadsItBack) {
  const std::string path = (dir_ / "t.tok").string();
  ASSERT_TRUE(
      WriteTokenFile(path, {300, TokenSplit::kValid, kSha}, {7, 299, 0, 258})
          .ok());
  const std::string bytes = Bytes("t.tok");
  ASSERT_EQ(bytes.size(), 64u + 4 * 2);
  EXPECT_EQ(bytes.substr(0, 8), "DTOKENS1");
  EXPECT_EQ(bytes.substr(8, 4), std::string("\x40\0\0\0", 4));     // header
  EXPECT_EQ(bytes.substr(12, 4), std::string("\x02\0\0\0", 4));    // width
  EXPECT_EQ(bytes.substr(16, 4), std::string("\x2c\x01\0\0", 4));  // 300
  EXPECT_EQ(bytes.substr(20, 4), std::string("\x01\0\0\0", 4));    // valid
  EXPECT_EQ(bytes.substr(24, 8), std::string("\x04\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(bytes.substr(32, 32), std::string(32, '\xaa'));
  EXPECT_EQ(bytes.substr(64), std::string("\x07\0\x2b\x01\0\0\x02\x01", 8));

  auto file = TokenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), 4);
  EXPECT_EQ((*file)->info().vocab_size, 300);
  EXPECT_EQ((*file)->info().split, TokenSplit::kValid);
  EXPECT_EQ((*file)->info().tokenizer_sha256, kSha);
  EXPECT_EQ((*file)->at(1), 299u);
  EXPECT_EQ((*file)->at(3), 258u);
}

TEST_F(TokenFileTest, VocabulariesPastSixteenBitsTakeFourBytes) {
  const std::string path = (dir_ / "wide.tok").string();
  ASSERT_TRUE(
      WriteTokenFile(path, {70000, TokenSplit::kTrain, kSha}, {69999, 1}).ok());
  EXPECT_EQ(Bytes("wide.tok").size(), 64u + 2 * 4);
  auto file = TokenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->at(0), 69999u);
}

TEST_F(TokenFileTest, RefusesToWriteAnIdOutsideTheVocabulary) {
  const std::string path = (dir_ / "bad.tok").string();
  EXPECT_THAT(WriteTokenFile(path, {10, TokenSplit::kTrain, kSha}, {1, 10}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("id 10 at position 1 is not below the "
                                 "vocabulary size 10")));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(TokenFileTest, RefusesFilesWhoseHeaderLies) {
  const std::string path = (dir_ / "t.tok").string();
  ASSERT_TRUE(
      WriteTokenFile(path, {300, TokenSplit::kTrain, kSha}, {1, 2, 3}).ok());
  const std::string good = Bytes("t.tok");

  EXPECT_THAT(TokenFile::Open(Put("cut.tok", good.substr(0, good.size() - 1))),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("header says 3 tokens (64 + 3 x 2 bytes) but "
                                 "the file has 69 bytes (truncated)")));
  EXPECT_THAT(TokenFile::Open(Put("long.tok", good + "xx")),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("but the file has 72 bytes")));
  // A count of 2^62 tokens: refused from the file size, nothing allocated.
  std::string huge = good;
  huge[31] = '\x40';
  EXPECT_THAT(TokenFile::Open(Put("huge.tok", huge)),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("header says 4611686018427387907 tokens")));
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_THAT(
      TokenFile::Open(Put("magic.tok", magic)),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is not a token file")));
  EXPECT_THAT(TokenFile::Open(Put("short.tok", "DTOKENS1")),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("is 8 bytes, shorter than its 64-byte")));
  std::string width = good;
  width[12] = '\x04';
  EXPECT_THAT(TokenFile::Open(Put("width.tok", width)),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("malformed header: vocab_size 300, 4 bytes")));
  // An id the header's vocabulary does not have (written by hand).
  std::string id = good;
  id[66] = '\x2c';
  id[67] = '\x01';
  EXPECT_THAT(TokenFile::Open(Put("id.tok", id)),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("id 300 at position 1 is not below its "
                                 "vocabulary size 300")));
  EXPECT_THAT(TokenFile::Open((dir_ / "absent.tok").string()),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("cannot open token file")));
}

}  // namespace
}  // namespace distill::data
