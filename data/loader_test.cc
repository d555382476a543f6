#include "data/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/testing/idx_files.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::Iota;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Sample i is a [1, 4, 4] image filled with i and labelled i % 10. Optionally
// fails for one id, and counts Get calls for the queue-bound test.
class FakeDataset : public Dataset {
 public:
  explicit FakeDataset(int64_t size, int64_t failing_id = -1)
      : size_(size), failing_id_(failing_id) {}

  int64_t size() const override { return size_; }
  int64_t num_classes() const override { return 10; }
  std::vector<int64_t> input_shape() const override { return {1, 4, 4}; }
  std::string name() const override { return "fake"; }
  float background_value() const override { return -1.0f; }

  absl::StatusOr<Batch> Get(absl::Span<const int64_t> ids) const override {
    OnGet();
    for (const int64_t id : ids) {
      if (id == failing_id_) {
        return absl::DataLossError(absl::StrCat("fake: cannot read id ", id));
      }
    }
    Batch batch;
    batch.ids = torch::tensor(torch::ArrayRef<int64_t>(ids.data(), ids.size()),
                              torch::kLong);
    batch.inputs = batch.ids.to(torch::kFloat)
                       .view({-1, 1, 1, 1})
                       .expand({-1, 1, 4, 4})
                       .contiguous();
    batch.labels = batch.ids.remainder(10);
    return batch;
  }

  int64_t gets() const { return gets_.load(); }

 protected:
  virtual void OnGet() const { gets_.fetch_add(1); }
  mutable std::atomic<int64_t> gets_{0};

 private:
  const int64_t size_;
  const int64_t failing_id_;
};

// Records how far the producer ever got ahead of the consumer. The consumer
// counts a batch as taken when it *starts* Next(), so a correct producer can
// never be seen more than queue_depth ahead, whatever the interleaving.
class CountingDataset final : public FakeDataset {
 public:
  CountingDataset(int64_t size, int64_t depth)
      : FakeDataset(size), depth_(depth) {}

  void StartTaking() { taken_.fetch_add(1); }
  int64_t max_ahead() const {
    absl::MutexLock lock(&mu_);
    return max_ahead_;
  }
  absl::Notification& filled() { return filled_; }
  absl::Notification& overran() { return overran_; }

 private:
  void OnGet() const override {
    const int64_t gets = gets_.fetch_add(1) + 1;
    const int64_t ahead = gets - taken_.load();
    absl::MutexLock lock(&mu_);
    max_ahead_ = std::max(max_ahead_, ahead);
    if (ahead == depth_ && !filled_.HasBeenNotified()) filled_.Notify();
    if (ahead > depth_ && !overran_.HasBeenNotified()) overran_.Notify();
  }

  const int64_t depth_;
  std::atomic<int64_t> taken_{0};
  mutable absl::Mutex mu_;
  mutable int64_t max_ahead_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::Notification filled_;
  mutable absl::Notification overran_;
};

LoaderOptions Options(int64_t batch_size, int64_t depth = 4) {
  LoaderOptions options;
  options.batch_size = batch_size;
  options.queue_depth = depth;
  return options;
}

TEST(LoaderTest, DeliversEveryIdOnceInOrder) {
  FakeDataset dataset(50);
  std::vector<int64_t> ids = Iota(50);
  std::reverse(ids.begin() + 10, ids.end());
  Loader loader(dataset, ids, Options(8, 2));

  std::vector<int64_t> seen;
  std::vector<int64_t> sizes;
  while (true) {
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_THAT(batch, IsOk());
    if (!batch->has_value()) break;
    const Batch& b = **batch;
    sizes.push_back(b.ids.size(0));
    for (int64_t i = 0; i < b.ids.size(0); ++i) {
      const int64_t id = b.ids[i].item<int64_t>();
      seen.push_back(id);
      EXPECT_EQ(b.labels[i].item<int64_t>(), id % 10);
      EXPECT_TRUE(
          torch::all(b.inputs[i] == static_cast<float>(id)).item<bool>());
    }
  }
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(sizes, (std::vector<int64_t>{8, 8, 8, 8, 8, 8, 2}));
  // The end stays the end.
  absl::StatusOr<std::optional<Batch>> after = loader.Next();
  ASSERT_THAT(after, IsOk());
  EXPECT_FALSE(after->has_value());
}

TEST(LoaderTest, DropLastBatchDropsTheShortTail) {
  FakeDataset dataset(10);
  LoaderOptions options = Options(4);
  options.drop_last_batch = true;
  Loader loader(dataset, Iota(10), options);
  int64_t batches = 0;
  while (true) {
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_THAT(batch, IsOk());
    if (!batch->has_value()) break;
    EXPECT_EQ((*batch)->ids.size(0), 4);
    ++batches;
  }
  EXPECT_EQ(batches, 2);
}

TEST(LoaderTest, EmptyIdsEndAtOnce) {
  FakeDataset dataset(10);
  Loader loader(dataset, {}, Options(4));
  absl::StatusOr<std::optional<Batch>> batch = loader.Next();
  ASSERT_THAT(batch, IsOk());
  EXPECT_FALSE(batch->has_value());
}

TEST(LoaderTest, AppliesAugmentationWithSeedEpochAndBackground) {
  FakeDataset dataset(16);
  LoaderOptions options = Options(16);
  options.augment.enabled = true;
  options.augment.crop_padding = 1;
  options.seed = 77;
  options.epoch = 3;
  Loader loader(dataset, Iota(16), options);
  absl::StatusOr<std::optional<Batch>> batch = loader.Next();
  ASSERT_THAT(batch, IsOk());
  ASSERT_TRUE(batch->has_value());

  absl::StatusOr<Batch> plain = dataset.Get(Iota(16));
  ASSERT_THAT(plain, IsOk());
  const torch::Tensor expected =
      Augment(plain->inputs, plain->ids, 77, 3, options.augment, -1.0f);
  EXPECT_TRUE(torch::equal((*batch)->inputs, expected));
  EXPECT_FALSE(torch::equal((*batch)->inputs, plain->inputs));
}

TEST(LoaderTest, ProducerStaysWithinQueueDepth) {
  const int64_t depth = 3;
  CountingDataset dataset(40, depth);
  Loader loader(dataset, Iota(40), Options(2, depth));

  // Untouched, the producer fills the queue and must then stop.
  dataset.filled().WaitForNotification();
  EXPECT_FALSE(dataset.overran().WaitForNotificationWithTimeout(
      absl::Milliseconds(200)));
  EXPECT_EQ(dataset.gets(), depth);

  int64_t batches = 0;
  while (true) {
    dataset.StartTaking();
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_THAT(batch, IsOk());
    if (!batch->has_value()) break;
    ++batches;
  }
  EXPECT_EQ(batches, 20);
  EXPECT_EQ(dataset.gets(), 20);
  EXPECT_LE(dataset.max_ahead(), depth);
  EXPECT_FALSE(dataset.overran().HasBeenNotified());
}

TEST(LoaderTest, GetErrorSurfacesFromNextAndStopsTheLoader) {
  FakeDataset dataset(10, /*failing_id=*/5);
  Loader loader(dataset, Iota(10), Options(2, 8));
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_THAT(batch, IsOk());
    ASSERT_TRUE(batch->has_value());
  }
  EXPECT_THAT(loader.Next(), StatusIs(absl::StatusCode::kDataLoss,
                                      HasSubstr("cannot read id 5")));
  // The error is sticky and nothing was fetched past it.
  EXPECT_THAT(loader.Next(), StatusIs(absl::StatusCode::kDataLoss,
                                      HasSubstr("cannot read id 5")));
  EXPECT_EQ(dataset.gets(), 3);
}

TEST(LoaderTest, InvalidBatchSizeIsInvalidArgument) {
  FakeDataset dataset(10);
  Loader loader(dataset, Iota(10), Options(0));
  EXPECT_THAT(loader.Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("batch_size"), HasSubstr("fake"))));
}

TEST(LoaderTest, AugmentErrorSurfacesAsStatus) {
  // Augment refuses non-4-D inputs; the TorchCall in the producer must turn
  // the c10::Error into a Status rather than let it kill the process.
  class FlatDataset final : public FakeDataset {
   public:
    FlatDataset() : FakeDataset(4) {}
    absl::StatusOr<Batch> Get(absl::Span<const int64_t> ids) const override {
      absl::StatusOr<Batch> batch = FakeDataset::Get(ids);
      if (batch.ok()) batch->inputs = batch->inputs.flatten(1);
      return batch;
    }
  };
  FlatDataset dataset;
  LoaderOptions options = Options(2);
  options.augment.enabled = true;
  Loader loader(dataset, Iota(4), options);
  EXPECT_THAT(loader.Next(), StatusIs(absl::StatusCode::kInternal,
                                      AllOf(HasSubstr("augmenting"),
                                            HasSubstr("[N, C, H, W]"))));
}

TEST(LoaderTest, DestroyingMidEpochDoesNotHang) {
  FakeDataset dataset(1000);
  {
    Loader loader(dataset, Iota(1000), Options(1, 2));
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_THAT(batch, IsOk());
    ASSERT_TRUE(batch->has_value());
  }
  {
    // Destroyed before the consumer took anything.
    Loader loader(dataset, Iota(1000), Options(1, 1));
  }
  // The producers stopped early instead of fetching all 2000 batches.
  EXPECT_LT(dataset.gets(), 2000);
}

}  // namespace
}  // namespace distill::data
