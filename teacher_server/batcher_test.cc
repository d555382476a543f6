// The batcher's order and room: streams take turns, a cancelled stream's
// queued batches are dropped unrun, and HasRoom follows the queued samples.
// The forward is the test's own, blocking on a gate, so the queue is filled
// while the worker is held inside the first forward: no timing involved.
#include "teacher_server/batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace distill::teacher {
namespace {

using ::testing::ElementsAre;

// A model of 2 classes whose forward waits for `release` on its first call;
// with `positions` > 1 a language model over windows of that many tokens.
class GatedModel {
 public:
  explicit GatedModel(int64_t positions = 1) {
    model_.name = "gated";
    model_.hash = "0";
    model_.input_shape = {positions};
    model_.output_shape = {2};
    if (positions > 1) {
      model_.input_dtype = v1::Tensor::INT32;
      model_.output_shape = {positions, 2};
      model_.context_length = positions;
    }
    model_.forward = [this](const torch::Tensor& x) {
      if (!entered_.HasBeenNotified()) entered_.Notify();
      if (!released_) {
        release_.WaitForNotification();
        released_ = true;
      }
      absl::MutexLock lock(&mu_);
      ++forwards_;
      sizes_.push_back(x.size(0));
      std::vector<int64_t> shape = {x.size(0)};
      shape.insert(shape.end(), model_.output_shape.begin(),
                   model_.output_shape.end());
      return torch::zeros(shape);
    };
  }
  const ServedModel* model() const { return &model_; }
  void WaitEntered() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  int forwards() {
    absl::MutexLock lock(&mu_);
    return forwards_;
  }
  // The samples of every forward, in order.
  std::vector<int64_t> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }

 private:
  ServedModel model_;
  absl::Notification entered_;
  absl::Notification release_;
  bool released_ = false;  // worker thread only
  absl::Mutex mu_;
  int forwards_ = 0;
  std::vector<int64_t> sizes_;
};

v1::StreamHeader Dense() {
  v1::StreamHeader header;
  header.set_temperature(1);
  header.set_encoding(v1::DENSE_FP32);
  return header;
}

class BatcherTest : public ::testing::Test {
 protected:
  // Queues one sample from `stream`; its answer's arrival is logged as
  // `name` (or "name:cancelled").
  void Submit(DynamicBatcher& batcher, uint64_t stream, const std::string& name,
              std::shared_ptr<std::atomic<bool>> cancelled = nullptr,
              torch::Tensor inputs = torch::zeros({1, 1})) {
    batcher.Submit(std::move(inputs), Dense(), {stream, cancelled},
                   [this, name](absl::StatusOr<v1::SoftTargets> answer) {
                     absl::MutexLock lock(&mu_);
                     order_.push_back(answer.ok() ? name : name + ":cancelled");
                   });
  }
  std::vector<std::string> Order() {
    absl::MutexLock lock(&mu_);
    return order_;
  }

  absl::Mutex mu_;
  std::vector<std::string> order_;
};

// Stream 1 queues 4 batches before stream 2 queues 1: FIFO would answer
// stream 2 last; in turns it goes second.
TEST_F(BatcherTest, StreamsTakeTurns) {
  GatedModel gated;
  BatcherOptions options;
  options.max_batch = 1;
  options.max_queue_delay = absl::ZeroDuration();
  DynamicBatcher batcher(gated.model(), options, nullptr);
  Submit(batcher, 1, "a0");
  gated.WaitEntered();  // the worker holds a0 inside the forward
  for (const char* name : {"a1", "a2", "a3", "a4"}) Submit(batcher, 1, name);
  Submit(batcher, 2, "b1");
  Submit(batcher, 2, "b2");
  gated.Release();
  batcher.Stop();
  EXPECT_THAT(Order(), ElementsAre("a0", "a1", "b1", "a2", "b2", "a3", "a4"));
}

// A cancelled stream's queued batches get Cancelled and no forward.
TEST_F(BatcherTest, CancelledStreamsBatchesAreDroppedUnrun) {
  GatedModel gated;
  BatcherOptions options;
  options.max_batch = 1;
  options.max_queue_delay = absl::ZeroDuration();
  options.max_queued_samples = 3;
  DynamicBatcher batcher(gated.model(), options, nullptr);
  auto gone = std::make_shared<std::atomic<bool>>(false);
  Submit(batcher, 1, "a0");
  gated.WaitEntered();
  EXPECT_TRUE(batcher.HasRoom());
  Submit(batcher, 2, "c1", gone);
  Submit(batcher, 2, "c2", gone);
  Submit(batcher, 1, "a1");
  EXPECT_FALSE(batcher.HasRoom());  // 3 samples wait
  gone->store(true);
  gated.Release();
  batcher.Stop();
  EXPECT_THAT(Order(), ElementsAre("a0", "c1:cancelled", "c2:cancelled", "a1"));
  EXPECT_EQ(gated.forwards(), 2);
  EXPECT_EQ(batcher.stats().dropped, 2);
  EXPECT_EQ(batcher.stats().batches, 2);
  EXPECT_TRUE(batcher.HasRoom());
}

// A language model's forward is bounded by token positions, not samples:
// with windows of 8 tokens and max_batch_tokens 32, batches of 2 windows
// pair up (32 tokens) where max_batch alone (512 samples) would run all
// queued windows at once, and a batch over the budget runs alone.
TEST_F(BatcherTest, LanguageModelForwardsAreBoundedByTokens) {
  for (const int64_t budget : {int64_t{32}, int64_t{0}}) {
    SCOPED_TRACE(budget);
    GatedModel gated(8);
    BatcherOptions options;
    options.max_batch = 512;
    options.max_batch_tokens = budget;
    options.max_queue_delay = absl::ZeroDuration();
    DynamicBatcher batcher(gated.model(), options, nullptr);
    auto windows = [](int64_t n) { return torch::zeros({n, 8}, torch::kInt); };
    Submit(batcher, 1, "a0", nullptr, windows(2));
    gated.WaitEntered();
    Submit(batcher, 1, "a1", nullptr, windows(2));
    Submit(batcher, 2, "b1", nullptr, windows(2));
    Submit(batcher, 3, "c1", nullptr, windows(2));
    Submit(batcher, 4, "big", nullptr, windows(5));
    gated.Release();
    batcher.Stop();
    EXPECT_THAT(Order(), ElementsAre("a0", "a1", "b1", "c1", "big"));
    if (budget > 0) {
      EXPECT_THAT(gated.sizes(), ElementsAre(2, 4, 2, 5));
    } else {
      EXPECT_THAT(gated.sizes(), ElementsAre(2, 11));
    }
    order_.clear();
  }
}

}  // namespace
}  // namespace distill::teacher
