// The one training loop without a binary: one step against the update
// computed here with plain torch ops, micro-batches and clipping, the epoch
// plan, and the loop's calls to its hooks, teacher and settings.
#include "trainer/internal/loop.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/testing/status_matchers.h"
#include "trainer/dist/communicator.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Sample i: 4 features sin(0.1 (i + 1) k) for k = 0..3, label i % 3.
class TinyDataset final : public data::Dataset {
 public:
  explicit TinyDataset(int64_t size) : size_(size) {}
  int64_t size() const override { return size_; }
  int64_t num_classes() const override { return 3; }
  std::vector<int64_t> input_shape() const override { return {4}; }
  std::string name() const override { return "tiny"; }
  float background_value() const override { return 0; }
  absl::StatusOr<data::Batch> Get(
      absl::Span<const int64_t> ids) const override {
    data::Batch batch;
    batch.ids = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()));
    std::vector<torch::Tensor> rows;
    for (int64_t id : ids) {
      rows.push_back(torch::arange(4, torch::kFloat).mul(0.1 * (id + 1)).sin());
    }
    batch.inputs = torch::stack(rows);
    batch.labels = batch.ids.remainder(3);
    return batch;
  }

 private:
  int64_t size_;
};

JobConfig Config(int batch_size, bool drop_last_batch = false) {
  JobConfig c;
  c.set_batch_size(batch_size);
  c.mutable_data()->set_loader_queue_depth(2);
  c.mutable_data()->set_drop_last_batch(drop_last_batch);
  return c;
}

losses::CompositeLoss HardCe() {
  auto loss = losses::CompositeLoss::Create({{"hard_ce", 1.0, {}}});
  EXPECT_THAT(loss, IsOk());
  return *std::move(loss);
}

// A linear classifier with fixed weights and plain SGD (no momentum).
struct Linear {
  Linear() : layer(torch::nn::LinearOptions(4, 3)) {
    torch::NoGradGuard no_grad;
    layer->weight.copy_(torch::arange(12, torch::kFloat).view({3, 4}) / 10 -
                        0.5);
    layer->bias.copy_(torch::tensor({0.1f, -0.2f, 0.3f}));
  }
  StepParts Parts(torch::optim::Optimizer& optimizer,
                  const losses::CompositeLoss& loss) {
    StepParts parts;
    parts.forward = [this](const torch::Tensor& x) {
      return layer->forward(x);
    };
    parts.parameters = layer->parameters();
    parts.optimizer = &optimizer;
    parts.loss = &loss;
    return parts;
  }
  torch::nn::Linear layer;
};

data::Batch SixSamples() {
  auto batch = TinyDataset(6).Get({0, 1, 2, 3, 4, 5});
  EXPECT_THAT(batch, IsOk());
  return *batch;
}

// softmax cross entropy and its gradient for weights W, b, written out here
// rather than taken from the loss under test.
struct Expected {
  double loss;
  torch::Tensor weight_grad, bias_grad;
};
Expected CrossEntropyByHand(const torch::Tensor& w, const torch::Tensor& b,
                            const data::Batch& batch) {
  const torch::Tensor x = batch.inputs.to(torch::kDouble);
  const torch::Tensor logits =
      x.matmul(w.to(torch::kDouble).t()) + b.to(torch::kDouble);
  const torch::Tensor p = logits.exp() / logits.exp().sum(1, true);
  const torch::Tensor onehot =
      torch::zeros_like(p).scatter_(1, batch.labels.view({-1, 1}), 1.0);
  const int64_t n = x.size(0);
  const double loss = -(onehot * p.log()).sum().item<double>() / n;
  const torch::Tensor dlogits = (p - onehot) / n;
  return {loss, dlogits.t().matmul(x), dlogits.sum(0)};
}

TEST(RunStepTest, AppliesOneSgdStepOfTheLossGradient) {
  Linear net;
  const torch::Tensor w0 = net.layer->weight.detach().clone();
  const torch::Tensor b0 = net.layer->bias.detach().clone();
  torch::optim::SGD sgd(net.layer->parameters(), torch::optim::SGDOptions(1.0));
  const losses::CompositeLoss loss = HardCe();
  const data::Batch batch = SixSamples();
  StepInput input;
  input.batch = &batch;
  input.lr = 0.5;
  StepProfile profile;
  auto result = RunStep(net.Parts(sgd, loss), StepSettings(), input, profile);
  ASSERT_THAT(result, IsOk());

  const Expected want = CrossEntropyByHand(w0, b0, batch);
  EXPECT_NEAR(result->total.item<double>(), want.loss, 1e-6);
  EXPECT_NEAR(result->terms.at("hard_ce"), want.loss, 1e-6);
  // The step's learning rate, not the optimizer's own, was applied.
  EXPECT_LT((net.layer->weight.to(torch::kDouble) -
             (w0.to(torch::kDouble) - 0.5 * want.weight_grad))
                .abs()
                .max()
                .item<double>(),
            1e-6);
  EXPECT_LT((net.layer->bias.to(torch::kDouble) -
             (b0.to(torch::kDouble) - 0.5 * want.bias_grad))
                .abs()
                .max()
                .item<double>(),
            1e-6);
  EXPECT_GT(profile.forward + profile.backward + profile.optimizer, 0);
}

// Strided micro-batches of a model without batch statistics accumulate to
// the whole batch's gradient: the same update and the same loss.
TEST(RunStepTest, MicroBatchesAccumulateToTheWholeBatchStep) {
  const losses::CompositeLoss loss = HardCe();
  const data::Batch batch = SixSamples();
  Linear whole, parts;
  torch::optim::SGD sgd_whole(whole.layer->parameters(),
                              torch::optim::SGDOptions(1.0));
  torch::optim::SGD sgd_parts(parts.layer->parameters(),
                              torch::optim::SGDOptions(1.0));
  StepInput input;
  input.batch = &batch;
  input.lr = 0.5;
  StepProfile profile;
  StepSettings three;
  three.micro_batches = 3;
  auto a =
      RunStep(whole.Parts(sgd_whole, loss), StepSettings(), input, profile);
  auto b = RunStep(parts.Parts(sgd_parts, loss), three, input, profile);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NEAR(a->total.item<double>(), b->total.item<double>(), 1e-6);
  EXPECT_LT(
      (whole.layer->weight - parts.layer->weight).abs().max().item<double>(),
      1e-6);
  // The comparison has teeth: the step moved the weights.
  EXPECT_GT(
      (whole.layer->weight - Linear().layer->weight).abs().max().item<double>(),
      1e-3);
}

TEST(RunStepTest, ClipsTheGlobalGradientNorm) {
  Linear net;
  std::vector<torch::Tensor> before;
  for (const auto& p : net.layer->parameters())
    before.push_back(p.detach().clone());
  torch::optim::SGD sgd(net.layer->parameters(), torch::optim::SGDOptions(1.0));
  const losses::CompositeLoss loss = HardCe();
  const data::Batch batch = SixSamples();
  StepInput input;
  input.batch = &batch;
  input.lr = 2.0;
  StepSettings clipped;
  clipped.grad_clip_norm = 1e-3;
  StepProfile profile;
  ASSERT_THAT(RunStep(net.Parts(sgd, loss), clipped, input, profile), IsOk());
  double squared = 0;
  const auto after = net.layer->parameters();
  for (size_t i = 0; i < after.size(); ++i) {
    squared += (after[i] - before[i]).pow(2).sum().item<double>();
  }
  // The update is lr times a gradient of norm 1e-3.
  EXPECT_NEAR(std::sqrt(squared), 2.0 * 1e-3, 1e-7);
}

TEST(RunStepTest, ATorchErrorNamesTheStep) {
  Linear net;
  torch::optim::SGD sgd(net.layer->parameters(), torch::optim::SGDOptions(1.0));
  const losses::CompositeLoss loss = HardCe();
  data::Batch batch = SixSamples();
  batch.inputs = torch::ones({6, 5});  // the layer takes 4 features
  StepInput input;
  input.batch = &batch;
  input.step = 16;
  StepSettings settings;
  settings.name = "QAT step";
  StepProfile profile;
  EXPECT_THAT(
      RunStep(net.Parts(sgd, loss), settings, input, profile),
      StatusIs(absl::StatusCode::kInternal, HasSubstr("QAT step 17: ")));
}

TEST(PlanEpochsTest, StepsPerEpochFollowTheLastBatchRule) {
  auto plan = PlanEpochs(Config(8), /*shard=*/10, /*world=*/2, /*epochs=*/3);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->rank_batch, 4);
  EXPECT_EQ(plan->steps_per_epoch, 3);  // 4 + 4 + 2
  EXPECT_EQ(plan->total_steps, 9);
  auto dropped = PlanEpochs(Config(8, /*drop_last_batch=*/true), 10, 2, 3);
  ASSERT_THAT(dropped, IsOk());
  EXPECT_EQ(dropped->steps_per_epoch, 2);
  EXPECT_THAT(PlanEpochs(Config(32, true), 10, 2, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "batch_size 32 is larger than the 20 training samples "
                       "and data.drop_last_batch is set: no step to take"));
}

// A teacher that records the temperatures it is asked for and answers a
// uniform distribution; or fails from its `fail_at`-th batch on.
class RecordingTeacher final : public TeacherClient {
 public:
  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double t) override {
    if (static_cast<int>(temperatures.size()) == fail_at) {
      return absl::UnavailableError("teacher gone");
    }
    temperatures.push_back(t);
    return losses::TeacherTargets::DenseFromLogits(
        torch::zeros({batch.labels.size(0), 3}), t);
  }
  absl::Status EpochDone() override {
    ++epochs_done;
    return absl::OkStatus();
  }
  int64_t num_classes() const override { return 3; }
  std::string description() const override { return "recording"; }
  std::vector<double> temperatures;
  int epochs_done = 0;
  int fail_at = -1;  // the call that fails, 0-based; -1: none
};

// Everything RunLoop needs for the tiny dataset on one process.
struct LoopFixture {
  explicit LoopFixture(int batch_size) : config(Config(batch_size)) {
    auto made = CreateCommunicator(WorldInfo{}, CommunicatorOptions{});
    EXPECT_THAT(made, IsOk());
    comm = *std::move(made);
    auto kd = losses::CompositeLoss::Create(
        {{"kd_kl", 0.5, {}}, {"hard_ce", 0.5, {}}});
    EXPECT_THAT(kd, IsOk());
    loss.emplace(*std::move(kd));
    parts.step = net.Parts(sgd, *loss);
    parts.train = &data;
    parts.teacher = &teacher;
    parts.comm = comm.get();
    settings.config = &config;
    settings.epochs = 2;
    settings.lr_at = [](int64_t step, const EpochPlan&) {
      return 0.01 * (step + 1);
    };
    settings.temperature_at = [](int64_t step, const EpochPlan& plan) {
      return 1.0 + static_cast<double>(step) / plan.total_steps;
    };
    settings.diverged = [](double loss, int64_t step) {
      return absl::InternalError(absl::StrCat("diverged at ", step + 1));
    };
  }

  JobConfig config;
  TinyDataset data{10};
  RecordingTeacher teacher;
  Linear net;
  torch::optim::SGD sgd{net.layer->parameters(), torch::optim::SGDOptions(1.0)};
  std::optional<losses::CompositeLoss> loss;
  std::unique_ptr<Communicator> comm;
  LoopParts parts;
  LoopSettings settings;
};

// Two epochs of 10 samples in batches of 4: three steps an epoch, each
// step's hooks called in order with its place, the teacher asked at each
// step's temperature, the epochs closed with their sums.
TEST(RunLoopTest, CallsTheHooksForEveryStepAndEpoch) {
  LoopFixture f(4);
  std::vector<int64_t> before, in_epoch, lrs_x100;
  std::vector<EpochReport> epochs;
  LoopHooks hooks;
  hooks.before_step = [&](const TrainPosition& at, const EpochPlan& plan) {
    EXPECT_EQ(plan.steps_per_epoch, 3);
    before.push_back(at.global_step);
    return absl::OkStatus();
  };
  hooks.after_step = [&](const StepReport& r) -> absl::StatusOr<bool> {
    in_epoch.push_back(r.step_in_epoch);
    lrs_x100.push_back(std::lround(100 * r.lr));
    EXPECT_EQ(r.terms.count("kd_kl"), 1u);
    return false;
  };
  hooks.close_epoch = [&](const EpochReport& r) {
    epochs.push_back(r);
    return absl::OkStatus();
  };
  TrainPosition position;
  auto stopped = RunLoop(f.parts, f.settings, hooks, position);
  ASSERT_THAT(stopped, IsOk());
  EXPECT_FALSE(*stopped);
  EXPECT_THAT(before, ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(in_epoch, ElementsAre(1, 2, 3, 1, 2, 3));
  EXPECT_THAT(lrs_x100, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(f.teacher.temperatures,
              ElementsAre(1.0, 1.0 + 1.0 / 6, 1.0 + 2.0 / 6, 1.5, 1.0 + 4.0 / 6,
                          1.0 + 5.0 / 6));
  EXPECT_EQ(f.teacher.epochs_done, 2);
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[1].epoch, 1);
  EXPECT_EQ(epochs[1].samples, 10);
  EXPECT_EQ(epochs[1].position.epoch, 2);
  EXPECT_EQ(epochs[1].position.cursor, 0);
  EXPECT_EQ(epochs[1].position.global_step, 6);
  EXPECT_GT(epochs[1].loss_sum, 0);
  EXPECT_EQ(position.global_step, 6);
}

// after_step returning true stops the loop there, mid-epoch, with the
// position of the next sample; a loop started from that position finishes
// the run with the same number of steps.
TEST(RunLoopTest, StopsWhereAfterStepSaysAndResumesFromThePosition) {
  LoopFixture f(4);
  LoopHooks hooks;
  hooks.after_step = [](const StepReport& r) -> absl::StatusOr<bool> {
    return r.position.global_step == 4;
  };
  TrainPosition position;
  auto stopped = RunLoop(f.parts, f.settings, hooks, position);
  ASSERT_THAT(stopped, IsOk());
  EXPECT_TRUE(*stopped);
  EXPECT_EQ(position.epoch, 1);
  EXPECT_EQ(position.cursor, 4);
  EXPECT_EQ(position.global_step, 4);

  std::vector<int64_t> in_epoch;
  hooks.after_step = [&](const StepReport& r) -> absl::StatusOr<bool> {
    in_epoch.push_back(r.step_in_epoch);
    return false;
  };
  ASSERT_THAT(RunLoop(f.parts, f.settings, hooks, position), IsOk());
  EXPECT_THAT(in_epoch, ElementsAre(2, 3));
  EXPECT_EQ(position.global_step, 6);
}

// A teacher that fails: the hook may write a checkpoint, which the error
// names, and no step runs with missing targets.
TEST(RunLoopTest, ATeacherFailureReturnsItsErrorWithTheCheckpoint) {
  LoopFixture f(4);
  f.teacher.fail_at = 2;
  LoopHooks hooks;
  int64_t failed_at = -1;
  hooks.teacher_failed =
      [&](const TrainPosition& at) -> absl::StatusOr<std::string> {
    failed_at = at.global_step;
    return std::string("/runs/x/ckpt-2.pt");
  };
  TrainPosition position;
  EXPECT_THAT(
      RunLoop(f.parts, f.settings, hooks, position),
      StatusIs(absl::StatusCode::kUnavailable,
               "teacher gone; checkpoint written to /runs/x/ckpt-2.pt"));
  EXPECT_EQ(failed_at, 2);
  EXPECT_EQ(position.global_step, 2);
}

TEST(RunLoopTest, ALossThatIsNotFiniteStopsWithTheDivergedError) {
  LoopFixture f(4);
  f.parts.step.forward = [&f](const torch::Tensor& x) {
    return f.net.layer->forward(x) * std::nan("");
  };
  TrainPosition position;
  EXPECT_THAT(RunLoop(f.parts, f.settings, LoopHooks(), position),
              StatusIs(absl::StatusCode::kInternal, "diverged at 1"));
}

}  // namespace
}  // namespace distill::trainer
