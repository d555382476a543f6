#include "launch/line_prefixer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace distill::launch {
namespace {

using ::testing::ElementsAre;

class LinePrefixerTest : public ::testing::Test {
 protected:
  LinePrefixer prefixer_{
      "[rank 1] ", [this](absl::string_view l) { lines_.emplace_back(l); }};
  std::vector<std::string> lines_;
};

TEST_F(LinePrefixerTest, PrefixesEveryCompleteLine) {
  prefixer_.Feed("one\ntwo\n");
  EXPECT_THAT(lines_, ElementsAre("[rank 1] one\n", "[rank 1] two\n"));
}

TEST_F(LinePrefixerTest, JoinsALineSplitAcrossReads) {
  prefixer_.Feed("ste");
  EXPECT_TRUE(lines_.empty());
  prefixer_.Feed("p 3/");
  prefixer_.Feed("8\nnext");
  EXPECT_THAT(lines_, ElementsAre("[rank 1] step 3/8\n"));
  prefixer_.Flush();
  EXPECT_THAT(lines_, ElementsAre("[rank 1] step 3/8\n", "[rank 1] next\n"));
}

TEST_F(LinePrefixerTest, KeepsEmptyLinesAndFlushesNothingExtra) {
  prefixer_.Feed("\n\n");
  prefixer_.Flush();
  EXPECT_THAT(lines_, ElementsAre("[rank 1] \n", "[rank 1] \n"));
}

}  // namespace
}  // namespace distill::launch
