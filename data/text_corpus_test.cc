#include "data/text_corpus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::ScratchDirTest;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The shape of `bible`'s output: chapter headings, numbered verses wrapped
// at the terminal width.
std::string Dump(const std::vector<std::string>& books) {
  std::string dump;
  for (const std::string& book : books) {
    absl::StrAppend(&dump, "\n", book, " 1\n\n  1 First verse of ", book,
                    ", which\nwraps onto a second line.\n  2 Second verse.\n",
                    "\n", book, " 2\n\n  1 Next chapter.\n");
  }
  return dump;
}

TEST(SplitKjvTest, HoldsOutWholeBooksAndJoinsWrappedVerses) {
  auto splits = SplitKjv(Dump({"Genesis", "Joshua", "Ruth", "Proverbs", "Mark",
                               "Romans", "Hebrews", "Revelation"}));
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_EQ(splits->train,
            "First verse of Genesis, which wraps onto a second line.\n"
            "Second verse.\nNext chapter.\n\n"
            "First verse of Revelation, which wraps onto a second line.\n"
            "Second verse.\nNext chapter.\n\n");
  EXPECT_THAT(splits->valid, StartsWith("First verse of Joshua, which wraps"));
  EXPECT_THAT(splits->valid, HasSubstr("\n\nFirst verse of Ruth"));
  EXPECT_THAT(splits->test, StartsWith("First verse of Proverbs"));
  EXPECT_EQ(splits->train_lines, 6);
  EXPECT_EQ(splits->valid_lines, 9);
  EXPECT_EQ(splits->test_lines, 9);
}

TEST(SplitKjvTest, RefusesTextWithoutTheHeldOutBooks) {
  EXPECT_THAT(SplitKjv(Dump({"Genesis", "Exodus"})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a King James Bible dump")));
  EXPECT_THAT(
      SplitKjv("just some text\nwithout headings\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 books found")));
}

// The real corpus, dumped by Debian's bible-kjv.
TEST(SplitKjvTest, SplitsTheInstalledBible) {
  testing::ScratchDir dir;
  const testing::Outcome dump =
      testing::RunShell("bible Gen1:1-Rev22:21", dir.path());
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  auto splits = SplitKjv(dump.out);
  ASSERT_TRUE(splits.ok()) << splits.status();
  // Joshua 1:1, Proverbs 1:1 and Genesis 1:1 open the three splits.
  EXPECT_THAT(splits->valid,
              StartsWith("Now after the death of Moses the servant of the "
                         "LORD it came to pass"));
  EXPECT_THAT(splits->test, StartsWith("The proverbs of Solomon the son of "
                                       "David, king of Israel;"));
  EXPECT_THAT(splits->train, StartsWith("In the beginning God created the "
                                        "heaven and the earth.\n"));
  // 31,102 verses in all (the KJV's count).
  EXPECT_EQ(splits->train_lines + splits->valid_lines + splits->test_lines,
            31102);
  EXPECT_EQ(splits->valid_lines, 658 + 85 + 433);  // Joshua, Ruth, Romans
  EXPECT_EQ(splits->test_lines, 915 + 678 + 303);  // Proverbs, Mark, Hebrews
}

class SplitTextDirTest : public ScratchDirTest {};

TEST_F(SplitTextDirTest, SendsEveryTwentiethBlockOfLinesToEachHeldOutSplit) {
  std::string a, b;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&a, "line ", i, "\n\n");
  for (int i = 300; i < 420; ++i) absl::StrAppend(&b, "line ", i, "\n");
  Write("a.txt", a);
  Write("b.txt", b);
  Write(".hidden", "never read\n");
  auto splits = SplitTextDir(dir_.string());
  ASSERT_TRUE(splits.ok()) << splits.status();
  // Lines 360..379 are block 18, 380..399 block 19; 400.. start over.
  EXPECT_THAT(splits->valid, StartsWith("line 360\nline 361\n"));
  EXPECT_THAT(splits->valid, HasSubstr("line 379\n\n"));
  EXPECT_THAT(splits->test, StartsWith("line 380\n"));
  EXPECT_THAT(splits->train, HasSubstr("line 299\n\nline 300\n"));
  EXPECT_THAT(splits->train, HasSubstr("line 359\nline 400\n"));
  EXPECT_EQ(splits->valid_lines, 20);
  EXPECT_EQ(splits->test_lines, 20);
  EXPECT_EQ(splits->train_lines, 380);
  EXPECT_THAT(splits->train, ::testing::Not(HasSubstr("never read")));
}

TEST_F(SplitTextDirTest, RefusesAFolderWithNoText) {
  Write("empty.txt", "\n  \n");
  EXPECT_THAT(SplitTextDir(dir_.string()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has no text (1 files")));
  EXPECT_THAT(SplitTextDir((dir_ / "missing").string()),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("does not exist or is not a folder")));
}

TEST_F(SplitTextDirTest, RefusesTooLittleTextAndBytesThatAreNotUtf8) {
  Write("short.txt", "one line\nand another\n");
  EXPECT_THAT(SplitTextDir(dir_.string()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("too little text: 2 non-empty lines")));
  Write("latin1.txt", "fine\ncaf\xe9 au lait\n");
  EXPECT_THAT(SplitTextDir(dir_.string()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("latin1.txt line 2 byte 4 is not UTF-8")));
}

}  // namespace
}  // namespace distill::data
