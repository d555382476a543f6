// On-policy batches: which steps, the sampled windows' labels, and the
// windows a resumed run takes from its checkpoint.
#include "trainer/internal/on_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/labels.h"
#include "common/testing/status_matchers.h"
#include "student/generate.h"
#include "trainer/internal/evaluate.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

std::unique_ptr<student::Model> TinyLm() {
  student::ModelSpec spec;
  spec.arch = "gpt";
  spec.options = {{"layers", 1},
                  {"heads", 2},
                  {"d_model", 16},
                  {"d_ff", 32},
                  {"context", 16}};
  auto model = student::Model::Create(spec, {{12}, 40, /*tokens=*/true});
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

// Four windows of 12 tokens and their next tokens.
data::Batch Windows() {
  const torch::Tensor w =
      torch::arange(4 * 13, torch::kLong).view({4, 13}) % 40;
  return {torch::arange(100, 104, torch::kLong), w.narrow(1, 0, 12).clone(),
          w.narrow(1, 1, 12).clone()};
}

TEST(OnPolicyStepTest, TheShareFollowsTheFractionAndTheSeedOnly) {
  int64_t on = 0;
  for (int64_t step = 0; step < 20000; ++step) {
    EXPECT_FALSE(IsOnPolicyStep(3, 0.0, step));
    EXPECT_TRUE(IsOnPolicyStep(3, 1.0, step));
    on += IsOnPolicyStep(3, 0.25, step) ? 1 : 0;
  }
  // Binomial(20000, 0.25): standard deviation 61; 5 of them.
  EXPECT_NEAR(on, 5000, 306);
  int64_t same = 0;
  for (int64_t step = 0; step < 1000; ++step) {
    EXPECT_EQ(IsOnPolicyStep(3, 0.5, step), IsOnPolicyStep(3, 0.5, step));
    same += IsOnPolicyStep(3, 0.5, step) == IsOnPolicyStep(4, 0.5, step);
  }
  // Another seed chooses other steps (about half agree by chance).
  EXPECT_LT(same, 600);
}

// tokens 10..15, prompt 2, length 4: inputs 10..14 and labels 11..15, of
// which label 0 predicts a prompt token and labels 3, 4 follow the stop.
TEST(OnPolicyBatchTest, LabelsCoverTheSampledTokensBeforeTheStopOnly) {
  SampledWindows w{torch::arange(10, 16, torch::kLong).view({1, 6}),
                   torch::tensor({4}, torch::kLong)};
  const data::Batch batch =
      SampledBatch(torch::tensor({7}, torch::kLong), w, /*prompt_tokens=*/2);
  EXPECT_TRUE(torch::equal(
      batch.inputs, torch::tensor({{10, 11, 12, 13, 14}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(
      batch.labels,
      torch::tensor({{kIgnoreLabel, 12L, 13L, kIgnoreLabel, kIgnoreLabel}},
                    torch::kLong)));
  EXPECT_EQ(batch.ids.item<int64_t>(), 7);
}

TEST(OnPolicySamplerTest, SamplesTheRestOfEachWindowFromItsPrompt) {
  torch::manual_seed(1);
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 1;
  options.prompt_tokens = 5;
  options.sampling.temperature = 1;
  options.seed = 9;
  OnPolicySampler sampler(*model, options);
  const data::Batch batch = Windows();
  auto a = sampler.Rewrite(batch, 3);
  ASSERT_THAT(a, IsOk());
  EXPECT_TRUE(torch::equal(a->ids, batch.ids));
  EXPECT_TRUE(
      torch::equal(a->inputs.narrow(1, 0, 5), batch.inputs.narrow(1, 0, 5)));
  EXPECT_FALSE(torch::equal(a->inputs, batch.inputs));
  // Labels are the next inputs, from the last prompt token on.
  EXPECT_TRUE(
      torch::equal(a->labels.narrow(1, 4, 7), a->inputs.narrow(1, 5, 7)));
  EXPECT_EQ((a->labels.narrow(1, 0, 4) == kIgnoreLabel).sum().item<int64_t>(),
            16);
  // The same step samples the same windows; another step others.
  EXPECT_TRUE(torch::equal(sampler.Rewrite(batch, 3)->inputs, a->inputs));
  EXPECT_FALSE(torch::equal(sampler.Rewrite(batch, 4)->inputs, a->inputs));
  // What was made for a step stays until a later step is asked for.
  EXPECT_TRUE(torch::equal(sampler.SampledFor(4).tokens.narrow(1, 0, 12),
                           sampler.Rewrite(batch, 4)->inputs));
  EXPECT_FALSE(sampler.SampledFor(3).tokens.defined());
}

TEST(OnPolicySamplerTest, FewerNewTokensPadTheWindowAndMaskThePadding) {
  torch::manual_seed(1);
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 1;
  options.prompt_tokens = 5;
  options.new_tokens = 3;
  options.sampling.temperature = 1;
  OnPolicySampler sampler(*model, options);
  auto a = sampler.Rewrite(Windows(), 0);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->inputs.sizes(), (std::vector<int64_t>{4, 12}));
  // Tokens 5..7 sampled, 8..12 padding: labels 4..6 read the samples.
  EXPECT_TRUE(torch::equal(a->inputs.narrow(1, 8, 4),
                           torch::zeros({4, 4}, torch::kLong)));
  EXPECT_TRUE(
      torch::equal(a->labels.narrow(1, 4, 3), a->inputs.narrow(1, 5, 3)));
  EXPECT_EQ((a->labels != kIgnoreLabel).sum().item<int64_t>(), 4 * 3);
}

// With student_top_k the batch asks the teacher at the student's own k
// likeliest ids of each position: those of a full forward of the sampled
// window, checked here; padded positions ask at ids 0 .. k - 1.
TEST(OnPolicySamplerTest, StudentTopKAsksTheTeacherAtTheStudentsLikeliestIds) {
  torch::manual_seed(1);
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 1;
  options.prompt_tokens = 5;
  options.new_tokens = 3;
  options.sampling.temperature = 1;
  options.student_top_k = 4;
  OnPolicySampler sampler(*model, options);
  auto a = sampler.Rewrite(Windows(), 0);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->teacher_indices.sizes(), (std::vector<int64_t>{4, 12, 4}));
  {
    torch::NoGradGuard no_grad;
    model->train(false);
    // Positions 0..6 were fed (5 prompt tokens, then 2 of the 3 samples).
    const torch::Tensor logits = model->forward(a->inputs).narrow(1, 0, 7);
    EXPECT_TRUE(
        torch::allclose(logits.gather(-1, a->teacher_indices.narrow(1, 0, 7)),
                        std::get<0>(logits.topk(4, -1)), 0, 1e-4));
    EXPECT_TRUE(torch::equal(a->teacher_indices.narrow(1, 7, 5),
                             torch::arange(4, torch::kLong).expand({4, 5, 4})));
  }
  // The ids travel with the windows into a checkpoint, and a restored run
  // asks at the same ones; windows saved without them are sampled again.
  const SampledWindows saved = sampler.SampledFor(0);
  ASSERT_TRUE(torch::equal(saved.top_ids, a->teacher_indices));
  OnPolicySampler restored(*model, options);
  SampledWindows marked = saved;
  marked.top_ids = saved.top_ids.flip(-1);
  restored.Restore(0, marked);
  EXPECT_TRUE(torch::equal(restored.Rewrite(Windows(), 0)->teacher_indices,
                           marked.top_ids));
  restored.Restore(0, {saved.tokens, saved.lengths, torch::Tensor()});
  EXPECT_TRUE(torch::equal(restored.Rewrite(Windows(), 0)->teacher_indices,
                           saved.top_ids));
  restored.Restore(
      0, {saved.tokens, saved.lengths, saved.top_ids.narrow(-1, 0, 3)});
  EXPECT_EQ(restored.Rewrite(Windows(), 0)->teacher_indices.size(2), 4);
}

TEST(OnPolicySamplerTest, OffPolicyStepsKeepTheirBatch) {
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 0;
  OnPolicySampler sampler(*model, options);
  const data::Batch batch = Windows();
  auto same = sampler.Rewrite(batch, 0);
  ASSERT_THAT(same, IsOk());
  EXPECT_TRUE(torch::equal(same->inputs, batch.inputs));
  EXPECT_TRUE(torch::equal(same->labels, batch.labels));
  EXPECT_FALSE(sampler.SampledFor(0).tokens.defined());
}

TEST(OnPolicySamplerTest, ARestoredRunTakesItsCheckpointsWindows) {
  torch::manual_seed(1);
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 1;
  options.prompt_tokens = 5;
  options.sampling.temperature = 1;
  const data::Batch batch = Windows();
  // Windows no sampler would make from these weights: the batch's own text.
  SampledWindows saved{
      torch::cat({batch.inputs, batch.labels.narrow(1, 11, 1)}, 1),
      torch::full({4}, 13L)};
  OnPolicySampler restored(*model, options);
  restored.Restore(2, saved);
  auto a = restored.Rewrite(batch, 2);
  ASSERT_THAT(a, IsOk());
  EXPECT_TRUE(torch::equal(a->inputs, batch.inputs));
  // Used once, and only for its step and prompts.
  EXPECT_FALSE(torch::equal(restored.Rewrite(batch, 2)->inputs, batch.inputs));
  restored.Restore(2, saved);
  EXPECT_FALSE(torch::equal(restored.Rewrite(batch, 1)->inputs, batch.inputs));
  SampledWindows other = saved;
  other.tokens = saved.tokens.clone();
  other.tokens[0][0] = 39;
  restored.Restore(2, other);
  EXPECT_FALSE(torch::equal(restored.Rewrite(batch, 2)->inputs, batch.inputs));
  // Windows of the wrong type or shape (a damaged checkpoint) are sampled
  // again rather than trusted.
  restored.Restore(2, {saved.tokens.to(torch::kFloat), saved.lengths});
  EXPECT_THAT(restored.Rewrite(batch, 2), IsOk());
  restored.Restore(2, {saved.tokens, torch::full({3}, 13L)});
  EXPECT_FALSE(torch::equal(restored.Rewrite(batch, 2)->inputs, batch.inputs));
}

TEST(OnPolicySamplerTest, RefusesWindowsNoLongerThanThePrompt) {
  auto model = TinyLm();
  OnPolicyOptions options;
  options.fraction = 1;
  options.prompt_tokens = 12;
  OnPolicySampler sampler(*model, options);
  EXPECT_THAT(sampler.Rewrite(Windows(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("prompt_tokens = 12")));
}

// A teacher that is a model in this process, giving dense targets, (with
// top_k) only its k most likely tokens, or its probabilities at a batch's
// teacher_indices.
class ModelTeacher final : public TeacherClient {
 public:
  ModelTeacher(student::Model& model, int64_t top_k = 0,
               bool at_indices = false)
      : model_(model), top_k_(top_k), at_indices_(at_indices) {}
  bool scores_at_indices() const override { return at_indices_; }
  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double t) override {
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = model_.forward(batch.inputs);
    if (batch.teacher_indices.defined()) {
      return losses::TeacherTargets::AtIndices(logits, t,
                                               batch.teacher_indices);
    }
    return top_k_ > 0
               ? losses::TeacherTargets::TopKFromLogits(logits, t, top_k_)
               : losses::TeacherTargets::DenseFromLogits(logits, t);
  }
  int64_t num_classes() const override { return 40; }
  std::string description() const override { return "model"; }

 private:
  student::Model& model_;
  int64_t top_k_;
  bool at_indices_;
};

// Token windows held in memory: window i is rows[i] (S + 1 tokens).
class WindowSet final : public data::Dataset {
 public:
  explicit WindowSet(torch::Tensor rows) : rows_(std::move(rows)) {}
  int64_t size() const override { return rows_.size(0); }
  int64_t num_classes() const override { return 40; }
  std::vector<int64_t> input_shape() const override {
    return {rows_.size(1) - 1};
  }
  std::string name() const override { return "windows"; }
  float background_value() const override { return 0; }
  absl::StatusOr<data::Batch> Get(
      absl::Span<const int64_t> ids) const override {
    const torch::Tensor index = torch::tensor(
        std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
    const torch::Tensor w = rows_.index_select(0, index);
    const int64_t s = rows_.size(1) - 1;
    return data::Batch{index, w.narrow(1, 0, s).clone(),
                       w.narrow(1, 1, s).clone()};
  }

 private:
  torch::Tensor rows_;
};

// Greedy continuations, so the test makes the same ones: the teacher's
// NLL is the mean over the sampled tokens of -log softmax(teacher(x)) at
// the token, computed here from the teacher's own forward.
TEST(TeacherNllOfSamplesTest, IsTheTeachersMeanNllOfTheStudentsTokens) {
  torch::manual_seed(5);
  auto student = TinyLm();
  auto teacher_model = TinyLm();
  const torch::Tensor rows =
      torch::randint(40, {5, 13}, torch::dtype(torch::kLong));
  WindowSet windows(rows);
  ModelTeacher teacher(*teacher_model);
  OnPolicyOptions greedy;  // temperature 0, the rest of each window
  greedy.prompt_tokens = 4;
  auto nll = TeacherNllOfSamples(*student, windows, /*batch_size=*/2, teacher,
                                 greedy, true);
  ASSERT_THAT(nll, IsOk());
  ASSERT_TRUE(nll->has_value());
  EXPECT_TRUE(student->zoo_module()->is_training());

  torch::NoGradGuard no_grad;
  student->train(false);
  teacher_model->train(false);
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < 5; ++i) {
    torch::Tensor seq = rows[i].narrow(0, 0, 4).unsqueeze(0);
    for (int64_t k = 0; k < 9; ++k) {
      const torch::Tensor next = student->forward(seq)[0][-1].argmax();
      seq = torch::cat({seq, next.view({1, 1})}, 1);
    }
    const torch::Tensor log_p =
        torch::log_softmax(teacher_model->forward(seq.narrow(1, 0, 12))[0], -1)
            .to(torch::kDouble);
    // Positions 3..11 predict the sampled tokens 4..12.
    for (int64_t j = 3; j < 12; ++j) {
      sum -= log_p[j][seq[0][j + 1].item<int64_t>()].item<double>();
      ++count;
    }
  }
  EXPECT_NEAR(**nll, sum / count, 1e-5);
  // Asking the teacher at the student's top ids on training steps does not
  // change what the measure asks for.
  OnPolicyOptions with_ids = greedy;
  with_ids.student_top_k = 3;
  auto same =
      TeacherNllOfSamples(*student, windows, 2, teacher, with_ids, false);
  ASSERT_THAT(same, IsOk());
  ASSERT_TRUE(same->has_value());
  EXPECT_NEAR(**same, sum / count, 1e-5);

  // Top-k targets cannot give every sampled token's probability: a top-k
  // teacher that scores at indices is asked at the sampled tokens, one
  // that does not gives no measure.
  ModelTeacher top_k_at_ids(*teacher_model, /*top_k=*/5, /*at_indices=*/true);
  auto at_ids =
      TeacherNllOfSamples(*student, windows, 2, top_k_at_ids, greedy, false);
  ASSERT_THAT(at_ids, IsOk());
  ASSERT_TRUE(at_ids->has_value());
  EXPECT_NEAR(**at_ids, sum / count, 1e-5);
  ModelTeacher top_k(*teacher_model, /*top_k=*/5);
  auto none = TeacherNllOfSamples(*student, windows, 2, top_k, greedy, false);
  ASSERT_THAT(none, IsOk());
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace distill::trainer
