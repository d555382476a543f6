#include "data/token_windows.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>
#include <optional>
#include <vector>

#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "data/loader.h"
#include "data/sampler.h"

namespace distill::data {
namespace {

using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

class TokenWindowsTest : public testing::ScratchDirTest {
 protected:
  // A token file holding 100, 101, ..., 100 + n - 1.
  std::shared_ptr<const TokenFile> Counting(int64_t n) {
    std::vector<uint32_t> ids(n);
    std::iota(ids.begin(), ids.end(), 100u);
    const std::string path = (dir_ / "count.tok").string();
    EXPECT_TRUE(WriteTokenFile(
                    path, {1000, TokenSplit::kTrain, std::string(64, '0')}, ids)
                    .ok());
    auto file = TokenFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status();
    return std::shared_ptr<const TokenFile>(std::move(*file));
  }
  static std::vector<int64_t> Row(const torch::Tensor& t, int64_t r) {
    torch::Tensor row = t[r].contiguous();
    return {row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()};
  }
};

TEST_F(TokenWindowsTest, NextTokenLabelsAndAPaddedLastWindow) {
  // 11 tokens, S = 4: windows start at 0, 4, 8; the last has 2 labels.
  auto windows = TokenWindows::Create(Counting(11), {.seq_len = 4});
  ASSERT_TRUE(windows.ok()) << windows.status();
  ASSERT_EQ((*windows)->size(), 3);
  EXPECT_EQ((*windows)->num_classes(), 1000);
  EXPECT_EQ((*windows)->input_shape(), std::vector<int64_t>{4});
  EXPECT_EQ((*windows)->num_targets(), 10);
  auto batch = (*windows)->Get({2, 0});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(Row(batch->inputs, 0), (std::vector<int64_t>{108, 109, 0, 0}));
  EXPECT_EQ(Row(batch->labels, 0),
            (std::vector<int64_t>{109, 110, kIgnoreLabel, kIgnoreLabel}));
  EXPECT_EQ(Row(batch->inputs, 1), (std::vector<int64_t>{100, 101, 102, 103}));
  EXPECT_EQ(Row(batch->labels, 1), (std::vector<int64_t>{101, 102, 103, 104}));
  EXPECT_EQ(Row(batch->ids.reshape({1, 2}), 0), (std::vector<int64_t>{2, 0}));
}

TEST_F(TokenWindowsTest, StrideOverlapsWindowsAndLimitCutsThem) {
  auto windows =
      TokenWindows::Create(Counting(10), {.seq_len = 4, .stride = 2});
  ASSERT_TRUE(windows.ok());
  // Starts 0, 2, 4, 6, 8 (the last predicts one token).
  EXPECT_EQ((*windows)->size(), 5);
  EXPECT_EQ((*windows)->num_targets(), 4 + 4 + 4 + 3 + 1);
  auto batch = (*windows)->Get({1});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(Row(batch->inputs, 0), (std::vector<int64_t>{102, 103, 104, 105}));
  auto limited = TokenWindows::Create(Counting(10),
                                      {.seq_len = 4, .stride = 2, .limit = 2});
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ((*limited)->size(), 2);
  EXPECT_THAT((*limited)->Get({2}),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("window 2 is outside [0, 2)")));
}

TEST_F(TokenWindowsTest, RefusesBadOptionsAndFilesTooShort) {
  EXPECT_THAT(
      TokenWindows::Create(Counting(10), {.seq_len = 0}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seq_len >= 1")));
  EXPECT_THAT(TokenWindows::Create(Counting(1), {.seq_len = 4}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds 1 tokens; a language-model sample "
                                 "needs at least 2")));
}

// The sampler and loader the image path uses, on windows: a run stopped
// after some batches and resumed from the sampler's cursor sees exactly the
// batches an unbroken epoch sees.
TEST_F(TokenWindowsTest, ShuffledShardsResumeExactly) {
  auto windows = TokenWindows::Create(Counting(400), {.seq_len = 8});
  ASSERT_TRUE(windows.ok());
  SamplerOptions sampler_options;
  sampler_options.seed = 7;
  sampler_options.world_size = 2;
  sampler_options.rank = 1;
  LoaderOptions loader_options;
  loader_options.batch_size = 3;
  auto batches = [&](Sampler& sampler) {
    std::vector<std::vector<int64_t>> inputs;
    Loader loader(**windows, sampler.Remaining(), loader_options);
    while (true) {
      auto next = loader.Next();
      EXPECT_TRUE(next.ok());
      if (!next.ok() || !next->has_value()) break;
      inputs.push_back(Row((*next)->inputs.reshape({1, -1}), 0));
    }
    return inputs;
  };
  Sampler unbroken((*windows)->size(), sampler_options);
  unbroken.SetEpoch(3);
  const auto all = batches(unbroken);
  ASSERT_EQ(all.size(), 9u);  // 50 windows, 25 per rank, batches of 3

  Sampler resumed((*windows)->size(), sampler_options);
  resumed.SetEpoch(3);
  ASSERT_TRUE(resumed.SetCursor(4 * 3).ok());
  const auto rest = batches(resumed);
  EXPECT_EQ(rest,
            std::vector<std::vector<int64_t>>(all.begin() + 4, all.end()));
  // Rank 0 sees other windows: the shards are disjoint.
  sampler_options.rank = 0;
  Sampler other((*windows)->size(), sampler_options);
  other.SetEpoch(3);
  EXPECT_NE(batches(other)[0], all[0]);
}

}  // namespace
}  // namespace distill::data
