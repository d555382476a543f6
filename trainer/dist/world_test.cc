#include "trainer/dist/world.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

absl::StatusOr<WorldInfo> Detect(
    const std::map<std::string, std::string>& env) {
  return DetectWorld([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(WorldTest, NoVariablesIsOneProcess) {
  auto w = Detect({});
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(w->world_size, 1);
  EXPECT_EQ(w->rank, 0);
  EXPECT_EQ(w->source, "single");
}

TEST(WorldTest, TorchrunVariables) {
  auto w = Detect({{"RANK", "3"},
                   {"WORLD_SIZE", "4"},
                   {"LOCAL_RANK", "1"},
                   {"LOCAL_WORLD_SIZE", "2"},
                   {"MASTER_ADDR", "10.1.2.3"},
                   {"MASTER_PORT", "1234"}});
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(w->rank, 3);
  EXPECT_EQ(w->world_size, 4);
  EXPECT_EQ(w->local_rank, 1);
  EXPECT_EQ(w->local_world_size, 2);
  EXPECT_EQ(w->master_addr, "10.1.2.3");
  EXPECT_EQ(w->master_port, 1234);
  EXPECT_EQ(w->source, "torchrun");
  EXPECT_FALSE(w->use_agent_store);
}

TEST(WorldTest, TorchrunAgentStore) {
  auto w = Detect({{"RANK", "0"},
                   {"WORLD_SIZE", "2"},
                   {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                   {"TORCHELASTIC_RESTART_COUNT", "3"}});
  ASSERT_THAT(w, IsOk());
  EXPECT_TRUE(w->use_agent_store);
  EXPECT_EQ(w->restart_count, 3);
}

TEST(WorldTest, SlurmVariablesWithARangedNodeList) {
  auto w = Detect({{"SLURM_PROCID", "5"},
                   {"SLURM_NTASKS", "8"},
                   {"SLURM_LOCALID", "1"},
                   {"SLURM_NTASKS_PER_NODE", "2(x4)"},
                   {"SLURM_JOB_NODELIST", "node[03-05,9]"},
                   {"SLURM_JOB_ID", "123456"}});
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(w->rank, 5);
  EXPECT_EQ(w->world_size, 8);
  EXPECT_EQ(w->local_rank, 1);
  EXPECT_EQ(w->local_world_size, 2);
  EXPECT_EQ(w->master_addr, "node03");
  EXPECT_EQ(w->master_port, 20000 + 123456 % 10000);
  EXPECT_EQ(w->source, "slurm");
}

// A job whose first node runs teachers puts its ranks' step elsewhere:
// rank 0 is on the step's first node.
TEST(WorldTest, SlurmStepNodeListWinsOverTheJobs) {
  auto w = Detect({{"SLURM_PROCID", "1"},
                   {"SLURM_NTASKS", "2"},
                   {"SLURM_JOB_NODELIST", "node[01-03]"},
                   {"SLURM_STEP_NODELIST", "node[02-03]"}});
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(w->master_addr, "node02");
}

TEST(WorldTest, TorchrunWinsOverSlurm) {
  auto w = Detect({{"RANK", "0"},
                   {"WORLD_SIZE", "2"},
                   {"SLURM_PROCID", "7"},
                   {"SLURM_NTASKS", "9"}});
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(w->world_size, 2);
}

TEST(WorldTest, BadValuesNameTheVariable) {
  EXPECT_THAT(
      Detect({{"RANK", "one"}, {"WORLD_SIZE", "2"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("environment variable RANK='one' is not an integer")));
  EXPECT_THAT(Detect({{"RANK", "2"}, {"WORLD_SIZE", "2"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rank 2 is outside [0, 2)")));
  EXPECT_THAT(
      Detect({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "70000"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("MASTER_PORT 70000 is outside 1..65535")));
}

TEST(WorldTest, FirstSlurmHostForms) {
  EXPECT_EQ(*FirstSlurmHost("node[03-05,9]"), "node03");
  EXPECT_EQ(*FirstSlurmHost("gpu7"), "gpu7");
  EXPECT_EQ(*FirstSlurmHost("a1,b[1-2]"), "a1");
  EXPECT_EQ(*FirstSlurmHost("rack[2-3]-n[01-04]"), "rack2-n01");
  EXPECT_EQ(*FirstSlurmHost("n[9,1-2],m"), "n9");
  EXPECT_THAT(FirstSlurmHost("node[]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("malformed SLURM_JOB_NODELIST 'node[]'")));
  EXPECT_THAT(FirstSlurmHost(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

}  // namespace
}  // namespace distill::trainer
