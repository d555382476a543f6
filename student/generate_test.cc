#include "student/generate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace distill::student {
namespace {

using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

std::unique_ptr<Model> TinyLm(int64_t context = 24) {
  ModelSpec spec;
  spec.arch = "gpt";
  spec.options = {{"layers", 2},
                  {"heads", 2},
                  {"d_model", 16},
                  {"d_ff", 32},
                  {"context", context}};
  auto model = Model::Create(spec, {{8}, 40, /*tokens=*/true});
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

// Greedy decoding the long way: the whole sequence through forward() for
// every new token, the argmax of its last position.
std::vector<int64_t> ArgmaxLoop(Model& model, std::vector<int64_t> sequence,
                                int64_t steps) {
  torch::NoGradGuard no_grad;
  model.train(false);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < steps; ++i) {
    const torch::Tensor logits =
        model.forward(torch::tensor(sequence, torch::kLong).unsqueeze(0));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    sequence.push_back(next);
  }
  return out;
}

TEST(GenerateTest, GreedyWithTheKvCacheIsTheArgmaxOfFullForwards) {
  torch::manual_seed(7);
  auto model = TinyLm();
  const std::vector<int64_t> prompt = {3, 17, 5, 9};
  GenerateOptions options;
  options.max_new_tokens = 12;
  auto ids = Generate(*model, prompt, options);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, ArgmaxLoop(*model, prompt, 12));
  // A nucleus too small for a second token is greedy too.
  options.temperature = 1.5;
  options.top_p = 1e-9;
  EXPECT_EQ(*Generate(*model, prompt, options), *ids);
}

TEST(GenerateTest, SamplingFollowsItsSeedOnly) {
  torch::manual_seed(7);
  auto model = TinyLm();
  GenerateOptions options;
  options.max_new_tokens = 16;
  options.temperature = 1.0;
  options.seed = 11;
  auto first = Generate(*model, {1, 2}, options);
  ASSERT_TRUE(first.ok()) << first.status();
  torch::manual_seed(12345);  // the global generator plays no part
  EXPECT_EQ(*Generate(*model, {1, 2}, options), *first);
  options.seed = 12;
  EXPECT_NE(*Generate(*model, {1, 2}, options), *first);
}

TEST(GenerateTest, StopsAtTheStopIdAndAtTheContext) {
  torch::manual_seed(7);
  auto model = TinyLm(/*context=*/10);
  GenerateOptions options;
  options.max_new_tokens = 50;
  auto ids = Generate(*model, {1, 2, 3}, options);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 7u);  // 3 + 7 fill the context of 10
  options.stop_id = (*ids)[2];
  auto stopped = Generate(*model, {1, 2, 3}, options);
  ASSERT_TRUE(stopped.ok());
  // Up to the first occurrence of the stop id, included.
  const auto first = std::find(ids->begin(), ids->end(), options.stop_id);
  EXPECT_EQ(*stopped, std::vector<int64_t>(ids->begin(), first + 1));
}

TEST(GenerateTest, RefusesBadPromptsAndOptions) {
  auto model = TinyLm(/*context=*/10);
  EXPECT_THAT(
      Generate(*model, {}, {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tokens")));
  EXPECT_THAT(Generate(*model, std::vector<int64_t>(10, 1), {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sees 10 at most")));
  EXPECT_THAT(Generate(*model, {1, 40}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("outside the model's vocabulary of 40")));
  GenerateOptions bad;
  bad.top_p = 0;
  EXPECT_THAT(Generate(*model, {1}, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_p")));
}

}  // namespace
}  // namespace distill::student
