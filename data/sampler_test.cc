#include "data/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/testing/idx_files.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::Iota;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

SamplerOptions Options(uint64_t seed, int64_t rank, int64_t world,
                       bool drop_last) {
  SamplerOptions options;
  options.seed = seed;
  options.rank = rank;
  options.world_size = world;
  options.drop_last = drop_last;
  return options;
}

std::vector<int64_t> Sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(SamplerTest, EachEpochIsAPermutation) {
  Sampler sampler(100, Options(42, 0, 1, false));
  EXPECT_EQ(sampler.epoch(), 0);
  EXPECT_EQ(sampler.shard_size(), 100);
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    sampler.SetEpoch(epoch);
    EXPECT_EQ(sampler.epoch(), epoch);
    epochs.push_back(sampler.Remaining());
    EXPECT_EQ(Sorted(epochs.back()), Iota(100)) << "epoch " << epoch;
  }
  EXPECT_NE(epochs[0], Iota(100));
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);

  Sampler again(100, Options(42, 0, 1, false));
  again.SetEpoch(1);
  EXPECT_EQ(again.Remaining(), epochs[1]);
  Sampler other_seed(100, Options(43, 0, 1, false));
  other_seed.SetEpoch(1);
  EXPECT_NE(other_seed.Remaining(), epochs[1]);
}

TEST(SamplerTest, NoShuffleKeepsOrder) {
  SamplerOptions options = Options(42, 0, 1, false);
  options.shuffle = false;
  Sampler sampler(7, options);
  sampler.SetEpoch(5);
  EXPECT_THAT(sampler.Remaining(), ElementsAre(0, 1, 2, 3, 4, 5, 6));
}

TEST(SamplerTest, ShardsAreDisjointEqualAndPaddedToCoverAll) {
  for (const int64_t world : {2, 3}) {
    const int64_t n = 101;  // splits evenly over neither 2 nor 3 ranks
    const int64_t expected_size = (n + world - 1) / world;
    std::vector<int64_t> all;
    for (int64_t rank = 0; rank < world; ++rank) {
      Sampler sampler(n, Options(9, rank, world, false));
      sampler.SetEpoch(2);
      EXPECT_EQ(sampler.shard_size(), expected_size);
      const std::vector<int64_t> shard = sampler.Remaining();
      EXPECT_EQ(static_cast<int64_t>(shard.size()), expected_size);
      all.insert(all.end(), shard.begin(), shard.end());
    }
    // Every id is present; padding repeats exactly world * size - n ids.
    const std::set<int64_t> distinct(all.begin(), all.end());
    EXPECT_EQ(static_cast<int64_t>(distinct.size()), n) << "world " << world;
    EXPECT_EQ(static_cast<int64_t>(all.size()), expected_size * world);
  }
}

TEST(SamplerTest, EvenSplitShardsAreDisjoint) {
  const int64_t n = 99;
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 3; ++rank) {
    Sampler sampler(n, Options(1, rank, 3, false));
    const std::vector<int64_t> shard = sampler.Remaining();
    EXPECT_EQ(shard.size(), 33u);
    all.insert(all.end(), shard.begin(), shard.end());
  }
  EXPECT_EQ(Sorted(all), Iota(n));
}

TEST(SamplerTest, PaddingWrapsAroundFromTheStart) {
  // 5 ids over 4 ranks: total 8, padding 3 = the first 3 ids again.
  SamplerOptions options = Options(0, 0, 4, false);
  options.shuffle = false;
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 4; ++rank) {
    options.rank = rank;
    Sampler sampler(5, options);
    const std::vector<int64_t> shard = sampler.Remaining();
    all.insert(all.end(), shard.begin(), shard.end());
  }
  // Rank-major: rank r holds indices[r], indices[r + 4] of 0,1,2,3,4,0,1,2.
  EXPECT_THAT(all, ElementsAre(0, 4, 1, 0, 2, 1, 3, 2));
}

TEST(SamplerTest, PaddingRepeatsWholeListWhenShorterThanPadding) {
  // 2 ids over 5 ranks: total 5, padding 3 > 2 ids -> 0,1,0,1,0.
  SamplerOptions options = Options(0, 0, 5, false);
  options.shuffle = false;
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 5; ++rank) {
    options.rank = rank;
    Sampler sampler(2, options);
    const std::vector<int64_t> shard = sampler.Remaining();
    all.insert(all.end(), shard.begin(), shard.end());
  }
  EXPECT_THAT(all, ElementsAre(0, 1, 0, 1, 0));
}

TEST(SamplerTest, DropLastTruncates) {
  const int64_t n = 100;
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 3; ++rank) {
    Sampler sampler(n, Options(9, rank, 3, true));
    EXPECT_EQ(sampler.shard_size(), 33);
    const std::vector<int64_t> shard = sampler.Remaining();
    EXPECT_EQ(shard.size(), 33u);
    all.insert(all.end(), shard.begin(), shard.end());
  }
  const std::set<int64_t> distinct(all.begin(), all.end());
  EXPECT_EQ(distinct.size(), 99u);  // disjoint, one id dropped
}

TEST(SamplerTest, CursorAdvancesAndRestores) {
  Sampler sampler(10, Options(3, 1, 2, false));
  const std::vector<int64_t> shard = sampler.Remaining();
  ASSERT_EQ(shard.size(), 5u);
  EXPECT_EQ(sampler.cursor(), 0);

  sampler.Advance(2);
  EXPECT_EQ(sampler.cursor(), 2);
  EXPECT_EQ(sampler.Remaining(),
            std::vector<int64_t>(shard.begin() + 2, shard.end()));
  sampler.Advance(100);
  EXPECT_EQ(sampler.cursor(), 5);
  EXPECT_THAT(sampler.Remaining(), IsEmpty());

  Sampler resumed(10, Options(3, 1, 2, false));
  ASSERT_THAT(resumed.SetCursor(3), IsOk());
  EXPECT_EQ(resumed.Remaining(),
            std::vector<int64_t>(shard.begin() + 3, shard.end()));
  EXPECT_THAT(resumed.SetCursor(5), IsOk());
  EXPECT_THAT(resumed.SetCursor(6),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("cursor 6"), HasSubstr("[0, 5]"))));
  EXPECT_THAT(
      resumed.SetCursor(-1),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cursor -1")));
  EXPECT_EQ(resumed.cursor(), 5);

  resumed.SetEpoch(1);
  EXPECT_EQ(resumed.cursor(), 0);
}

TEST(SamplerTest, EmptyDataset) {
  Sampler sampler(0, Options(3, 0, 2, false));
  EXPECT_EQ(sampler.shard_size(), 0);
  EXPECT_THAT(sampler.Remaining(), IsEmpty());
}

// Runs `script` with Debian's python3-torch and returns its stdout, or
// nothing when python3 or torch is missing.
std::optional<std::string> RunPythonTorch(const std::string& script) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    return std::nullopt;
  }
  const std::string command = "/usr/bin/python3 -c '" + script + "'";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0)
    out.append(buffer, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return out;
}

struct PythonCase {
  int64_t n, world, rank, epoch;
  uint64_t seed;
  bool drop_last;
};

TEST(SamplerTest, MatchesTorchDistributedSampler) {
  const std::vector<PythonCase> cases = {
      {100, 3, 1, 0, 0, false}, {100, 3, 2, 5, 42, false},
      {100, 3, 0, 2, 7, true},  {1000, 4, 3, 1, 1234, false},
      {10, 1, 0, 9, 99, false}, {60000, 2, 1, 3, 0, true},
  };
  std::string script =
      "import torch.utils.data.distributed as d\n"
      "for n, w, r, e, s, dl in [";
  for (const PythonCase& c : cases) {
    absl::StrAppend(&script, "(", c.n, ",", c.world, ",", c.rank, ",", c.epoch,
                    ",", c.seed, ",", c.drop_last ? "True" : "False", "),");
  }
  script +=
      "]:\n"
      "  sampler = d.DistributedSampler(range(n), num_replicas=w, rank=r,"
      " shuffle=True, seed=s, drop_last=dl)\n"
      "  sampler.set_epoch(e)\n"
      "  print(\" \".join(str(i) for i in sampler))\n";
  const std::optional<std::string> out = RunPythonTorch(script);
  if (!out.has_value()) GTEST_SKIP() << "python3 with torch is not available";

  std::istringstream lines(*out);
  for (const PythonCase& c : cases) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << "python printed too few lines";
    std::istringstream numbers(line);
    std::vector<int64_t> expected;
    for (int64_t id; numbers >> id;) expected.push_back(id);

    Sampler sampler(c.n, Options(c.seed, c.rank, c.world, c.drop_last));
    sampler.SetEpoch(c.epoch);
    EXPECT_EQ(sampler.Remaining(), expected)
        << "n=" << c.n << " world=" << c.world << " rank=" << c.rank
        << " epoch=" << c.epoch << " seed=" << c.seed
        << " drop_last=" << c.drop_last;
  }
}

}  // namespace
}  // namespace distill::data
