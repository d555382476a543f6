#include "launch/restart_policy.h"

#include <gtest/gtest.h>

namespace distill::launch {
namespace {

TEST(RestartPolicyTest, NoRestartsGivesUpAtTheFirstFailure) {
  RestartPolicy policy(0);
  EXPECT_FALSE(policy.RecordFailure("rank 0 exited with status 1"));
  EXPECT_EQ(policy.restarts(), 0);
  EXPECT_EQ(policy.GiveUpMessage(),
            "the job failed 1 time and --max_restarts=0 is spent: "
            "rank 0 exited with status 1 (1 time)");
}

TEST(RestartPolicyTest, CountsEachCauseInTheOrderFirstSeen) {
  RestartPolicy policy(2);
  EXPECT_TRUE(policy.RecordFailure("rank 1 was killed by signal 9 (SIGKILL)"));
  EXPECT_TRUE(policy.RecordFailure("teacher 0 exited with status 1"));
  EXPECT_EQ(policy.restarts(), 2);
  EXPECT_FALSE(policy.RecordFailure("rank 1 was killed by signal 9 (SIGKILL)"));
  EXPECT_EQ(policy.restarts(), 2);
  EXPECT_EQ(policy.GiveUpMessage(),
            "the job failed 3 times and --max_restarts=2 is spent: "
            "rank 1 was killed by signal 9 (SIGKILL) (2 times); "
            "teacher 0 exited with status 1 (1 time)");
}

}  // namespace
}  // namespace distill::launch
