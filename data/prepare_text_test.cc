// The preparation binary end to end, with the real spm_train / spm_encode /
// spm_decode of Debian's sentencepiece on real text (the licence texts every
// Debian system has in /usr/share/common-licenses).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "data/token_file.h"

namespace distill::data {
namespace {

using ::distill::testing::Outcome;
using ::distill::testing::RunProcess;
using ::distill::testing::RunShell;
using ::testing::HasSubstr;

class PrepareTextTest : public testing::ScratchDirTest {
 protected:
  Outcome Prepare(const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {testing::BinDir() +
                                     "/distill_prepare_text"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return RunProcess(argv, dir_, "prepare");
  }
  void MakeCorpus() {
    std::filesystem::create_directories(dir_ / "corpus");
    for (const char* name : {"GPL-3", "Apache-2.0"}) {
      std::filesystem::copy_file(
          std::string("/usr/share/common-licenses/") + name,
          dir_ / "corpus" / name);
    }
  }
};

TEST_F(PrepareTextTest, TokenFilesDecodeBackToTheSplitText) {
  MakeCorpus();
  const std::string out = (dir_ / "tokens").string();
  const Outcome run = Prepare({"--corpus", (dir_ / "corpus").string(),
                               "--out_dir", out, "--vocab_size", "300"});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  const nlohmann::json manifest =
      nlohmann::json::parse(testing::ReadFile(dir_ / "tokens/corpus.json"));
  const Outcome sha = RunShell("sha256sum " + out + "/tokenizer.model", dir_);
  ASSERT_EQ(sha.exit_code, 0);
  const std::string model_sha = sha.out.substr(0, 64);
  EXPECT_EQ(manifest["tokenizer_sha256"], model_sha);
  EXPECT_EQ(manifest["vocab_size"], 300);

  for (const std::string split : {"train", "valid", "test"}) {
    SCOPED_TRACE(split);
    auto file = TokenFile::Open(absl::StrCat(out, "/", split, ".tok"));
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->info().vocab_size, 300);
    EXPECT_EQ((*file)->info().tokenizer_sha256, model_sha);
    EXPECT_EQ((*file)->size(), manifest["splits"][split]["tokens"]);
    // Ids back to text through the real spm_decode: documents end with
    // </s> (id 2); each paragraph was encoded on its own line.
    std::vector<std::string> documents(1);
    for (int64_t i = 0; i < (*file)->size(); ++i) {
      const uint32_t id = (*file)->at(i);
      if (id == 2) {
        documents.emplace_back();
      } else {
        absl::StrAppend(&documents.back(), documents.back().empty() ? "" : " ",
                        id);
      }
    }
    documents.pop_back();
    Write(split + ".ids", absl::StrJoin(documents, "\n") + "\n");
    const Outcome decoded =
        RunShell(absl::StrCat("spm_decode --model=", out,
                              "/tokenizer.model --input_format=id < ",
                              (dir_ / (split + ".ids")).string()),
                 dir_);
    ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
    // The split's text with its paragraphs joined by spaces per document,
    // and runs of spaces as one (SentencePiece's nmt_nfkc normalization).
    std::vector<std::string> expected;
    for (absl::string_view doc :
         absl::StrSplit(testing::ReadFile(dir_ / "tokens" / (split + ".txt")),
                        "\n\n", absl::SkipEmpty())) {
      expected.push_back(absl::StrJoin(
          absl::StrSplit(doc, absl::ByAnyChar(" \n"), absl::SkipEmpty()), " "));
    }
    const bool same = decoded.out == absl::StrJoin(expected, "\n") + "\n";
    EXPECT_TRUE(same) << "decoded " << decoded.out.size()
                      << " bytes differ from the split's text";
    EXPECT_GT(expected.size(), 0u);
  }
  EXPECT_THAT(testing::ReadFile(dir_ / "tokens/valid.txt"), HasSubstr("\n"));
}

TEST_F(PrepareTextTest, BadInputIsOneLineAndWritesNothing) {
  std::filesystem::create_directories(dir_ / "empty");
  Write("empty/blank.txt", "\n\n");
  const std::string out = (dir_ / "tokens").string();
  Outcome run =
      Prepare({"--corpus", (dir_ / "empty").string(), "--out_dir", out});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.err, "distill_prepare_text: error: corpus folder " +
                         (dir_ / "empty").string() +
                         " has no text (1 files, no non-empty line)\n");
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            3);  // empty/, prepare.out, prepare.err

  // A vocabulary the text cannot fill: spm_train's own reason comes back.
  MakeCorpus();
  run = Prepare({"--corpus", (dir_ / "corpus").string(), "--out_dir", out,
                 "--vocab_size", "60000"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("training the tokenizer (spm_train"));
  EXPECT_THAT(run.err, HasSubstr("Vocabulary size too high (60000)"));
  EXPECT_FALSE(std::filesystem::exists(out));

  std::filesystem::create_directories(out);
  run = Prepare({"--corpus", (dir_ / "corpus").string(), "--out_dir", out});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("already exists"));
}

}  // namespace
}  // namespace distill::data
