#include "student/generate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace distill::student {
namespace {

using ::distill::testing::IsOk;
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

// A batch sampled the long way: every row's whole sequence through
// forward() for each new token, the draw from the last position's logits.
torch::Tensor SampleLoop(Model& model, torch::Tensor sequence, int64_t steps,
                         const GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  model.train(false);
  torch::Generator generator = at::detail::createCPUGenerator(options.seed);
  for (int64_t i = 0; i < steps; ++i) {
    const torch::Tensor logits = model.forward(sequence).select(1, -1);
    sequence = torch::cat(
        {sequence, SampleNext(logits, options, generator).unsqueeze(1)}, 1);
  }
  return sequence;
}

TEST(GenerateBatchTest, TheKvCacheEqualsFullForwardsGreedyAndSampled) {
  torch::manual_seed(7);
  auto model = TinyLm();
  const torch::Tensor prompts =
      torch::tensor({3, 17, 5, 9, 1, 1, 2, 30, 39, 0, 0, 7}, torch::kLong)
          .view({3, 4});
  GenerateOptions options;
  options.max_new_tokens = 12;
  auto greedy = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  ASSERT_EQ(greedy->tokens.sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_TRUE(torch::equal(greedy->tokens.narrow(1, 0, 4), prompts));
  for (int64_t row = 0; row < 3; ++row) {
    const auto r = prompts[row];
    const std::vector<int64_t> prompt(r.data_ptr<int64_t>(),
                                      r.data_ptr<int64_t>() + 4);
    const std::vector<int64_t> expected = ArgmaxLoop(*model, prompt, 12);
    EXPECT_TRUE(torch::equal(greedy->tokens[row].narrow(0, 4, 12),
                             torch::tensor(expected, torch::kLong)))
        << "row " << row;
  }
  EXPECT_TRUE(torch::equal(greedy->lengths, torch::full({3}, 16L)));

  options.temperature = 1.3;
  options.top_p = 0.9;
  options.seed = 5;
  auto sampled = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  EXPECT_TRUE(
      torch::equal(sampled->tokens, SampleLoop(*model, prompts, 12, options)));
  EXPECT_FALSE(torch::equal(sampled->tokens, greedy->tokens));
}

TEST(GenerateBatchTest, FollowsItsSeedAndRestoresTheMode) {
  torch::manual_seed(7);
  auto model = TinyLm();
  const torch::Tensor prompts = torch::tensor({{1, 2}, {3, 4}}, torch::kLong);
  GenerateOptions options;
  options.max_new_tokens = 10;
  options.temperature = 1.0;
  options.seed = 11;
  model->train(true);
  auto first = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(model->zoo_module()->is_training());
  torch::manual_seed(12345);  // the global generator plays no part
  EXPECT_TRUE(torch::equal(GenerateBatch(*model, prompts, options)->tokens,
                           first->tokens));
  options.seed = 12;
  EXPECT_FALSE(torch::equal(GenerateBatch(*model, prompts, options)->tokens,
                            first->tokens));
}

TEST(GenerateBatchTest, LengthsEndAtEachRowsFirstStopId) {
  torch::manual_seed(7);
  auto model = TinyLm();
  const torch::Tensor prompts = torch::tensor({{1, 2}, {3, 4}}, torch::kLong);
  GenerateOptions options;
  options.max_new_tokens = 8;
  auto all = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(all.ok()) << all.status();
  // Stop at row 0's third new token: each row ends at its own first one.
  options.stop_id = all->tokens[0][4].item<int64_t>();
  auto stopped = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(torch::equal(stopped->tokens, all->tokens));
  for (int64_t row = 0; row < 2; ++row) {
    int64_t expected = 10;
    for (int64_t i = 2; i < 10; ++i) {
      if (all->tokens[row][i].item<int64_t>() == options.stop_id) {
        expected = i + 1;
        break;
      }
    }
    EXPECT_EQ(stopped->lengths[row].item<int64_t>(), expected) << row;
  }
  EXPECT_LE(stopped->lengths[0].item<int64_t>(), 5);
}

TEST(GenerateBatchTest, TopIdsAreEveryFedPositionsLargestLogits) {
  torch::manual_seed(7);
  auto model = TinyLm();
  const torch::Tensor prompts =
      torch::tensor({3, 17, 5, 9, 1, 1, 2, 30, 39, 0, 0, 7}, torch::kLong)
          .view({3, 4});
  GenerateOptions options;
  options.max_new_tokens = 9;
  options.temperature = 1.3;
  options.seed = 5;
  auto plain = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->top_ids.defined());
  options.top_ids = 6;
  auto with_ids = GenerateBatch(*model, prompts, options);
  ASSERT_TRUE(with_ids.ok()) << with_ids.status();
  // Recording them leaves the draws alone.
  EXPECT_TRUE(torch::equal(with_ids->tokens, plain->tokens));
  // Positions 0 .. P + G - 2 were fed: 4 + 9 - 1 = 12.
  ASSERT_EQ(with_ids->top_ids.sizes(), (std::vector<int64_t>{3, 12, 6}));
  torch::NoGradGuard no_grad;
  model->train(false);
  const torch::Tensor logits =
      model->forward(with_ids->tokens.narrow(1, 0, 12));
  const torch::Tensor best = std::get<0>(logits.topk(6, -1));
  // The full forward's logits at the recorded ids are its 6 largest, in
  // order (up to float rounding between the two paths).
  EXPECT_TRUE(
      torch::allclose(logits.gather(-1, with_ids->top_ids), best, 0, 1e-4));
  const torch::Tensor sorted = std::get<0>(with_ids->top_ids.sort(-1));
  EXPECT_FALSE(
      (sorted.narrow(-1, 1, 5) == sorted.narrow(-1, 0, 5)).any().item<bool>());

  options.top_ids = 41;
  EXPECT_THAT(GenerateBatch(*model, prompts, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("top_ids 41 is more than the model's "
                                 "vocabulary of 40")));
  options.top_ids = -1;
  EXPECT_THAT(
      GenerateBatch(*model, prompts, options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_ids >= 0")));
}

TEST(GenerateBatchTest, RefusesWhatItCannotRun) {
  auto model = TinyLm(/*context=*/10);
  GenerateOptions options;
  options.max_new_tokens = 4;
  // 7 + 4 tokens feed 10 positions: the last is never fed back.
  EXPECT_THAT(GenerateBatch(*model, torch::ones({2, 7}, torch::kLong), options),
              IsOk());
  EXPECT_THAT(GenerateBatch(*model, torch::ones({2, 8}, torch::kLong), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("need 11 positions; 'gpt' sees 10")));
  EXPECT_THAT(
      GenerateBatch(*model, torch::full({1, 2}, 40L), options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  EXPECT_THAT(
      GenerateBatch(*model, torch::ones({2}, torch::kLong), options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[N, P]")));
  ModelSpec spec;
  spec.arch = "mlp";
  auto mlp = Model::Create(spec, {{1, 28, 28}, 10});
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_THAT(GenerateBatch(**mlp, torch::ones({1, 2}, torch::kLong), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("zoo language model")));
}

}  // namespace
}  // namespace distill::student
