#include "teacher_server/batcher.h"

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/torch_status.h"
#include "losses/teacher_targets.h"
#include "teacher_server/codec.h"

namespace distill::teacher {

absl::StatusOr<v1::SoftTargets> EncodeLogits(const torch::Tensor& logits,
                                             const v1::StreamHeader& header) {
  auto targets = TorchCall("computing soft targets", [&] {
    switch (header.encoding()) {
      case v1::TOP_K:
      case v1::TOP_K_PACKED:
        return losses::TeacherTargets::TopKFromLogits(
            logits, header.temperature(), header.top_k());
      case v1::SAMPLED:
        return losses::TeacherTargets::SampledFromLogits(
            logits, header.temperature(), header.samples());
      default:
        return losses::TeacherTargets::DenseFromLogits(logits,
                                                       header.temperature());
    }
  });
  if (!targets.ok()) return targets.status();
  return EncodeTargets(*targets, header.encoding());
}

DynamicBatcher::DynamicBatcher(const ServedModel* model, BatcherOptions options,
                               ServerMetrics* metrics)
    : model_(model),
      options_(options),
      positions_(model->context_length > 0 ? model->context_length : 1),
      metrics_(metrics) {
  worker_ = std::thread([this] { Run(); });
}

DynamicBatcher::~DynamicBatcher() { Stop(); }

void DynamicBatcher::Submit(torch::Tensor inputs,
                            const v1::StreamHeader& header, BatchOrigin origin,
                            Done done, torch::Tensor indices) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queued_samples_ += inputs.size(0);
      const uint64_t stream = origin.stream;
      std::deque<Item>& queue = queues_[stream];
      if (queue.empty()) turns_.push_back(stream);
      queue.push_back({std::move(inputs), std::move(indices), header,
                       std::move(origin), std::move(done), absl::Now()});
      return;
    }
  }
  done(absl::UnavailableError("the teacher server is shutting down"));
}

bool DynamicBatcher::Exceeds(int64_t samples) const {
  return samples > options_.max_batch ||
         (options_.max_batch_tokens > 0 &&
          samples * positions_ > options_.max_batch_tokens);
}

bool DynamicBatcher::HasRoom() const {
  absl::MutexLock lock(&mu_);
  return queued_samples_ < options_.max_queued_samples;
}

void DynamicBatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

BatcherStats DynamicBatcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Time DynamicBatcher::OldestEnqueued() const {
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& [stream, queue] : queues_) {
    oldest = std::min(oldest, queue.front().enqueued);
  }
  return oldest;
}

std::vector<DynamicBatcher::Item> DynamicBatcher::Gather(
    std::vector<Item>& dropped) {
  std::vector<Item> items;
  int64_t samples = 0;
  while (!turns_.empty()) {
    const uint64_t stream = turns_.front();
    std::deque<Item>& queue = queues_[stream];
    Item& next = queue.front();
    const int64_t n = next.inputs.size(0);
    const bool cancelled =
        next.origin.cancelled != nullptr && next.origin.cancelled->load();
    if (!cancelled && !items.empty() && Exceeds(samples + n)) break;
    queued_samples_ -= n;
    if (cancelled) {
      dropped.push_back(std::move(next));
    } else {
      samples += n;
      items.push_back(std::move(next));
    }
    queue.pop_front();
    turns_.pop_front();
    // A stream with more waiting goes to the back: the others go first.
    if (queue.empty()) {
      queues_.erase(stream);
    } else if (!cancelled) {
      turns_.push_back(stream);
    } else {
      turns_.push_front(stream);  // drop the rest of its queue next
    }
  }
  if (!items.empty()) {
    ++stats_.forwards;
    stats_.batches += items.size();
    stats_.samples += samples;
    stats_.max_batches_per_forward = std::max<int64_t>(
        stats_.max_batches_per_forward, static_cast<int64_t>(items.size()));
  }
  stats_.dropped += dropped.size();
  return items;
}

void DynamicBatcher::Run() {
  // Inference tensors never leave this thread: answers leave as bytes.
  torch::InferenceMode inference;
  while (true) {
    std::vector<Item> items;
    std::vector<Item> dropped;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](DynamicBatcher* b) { return b->stopping_ || !b->turns_.empty(); },
          this));
      if (turns_.empty()) return;  // stopping, nothing left
      // Wait for company until the batch is full, the oldest batch has
      // waited long enough, or the server stops.
      const absl::Time deadline = OldestEnqueued() + options_.max_queue_delay;
      mu_.AwaitWithDeadline(absl::Condition(
                                +[](DynamicBatcher* b) {
                                  return b->stopping_ ||
                                         b->Exceeds(b->queued_samples_ + 1);
                                },
                                this),
                            deadline);
      items = Gather(dropped);
    }
    for (Item& item : dropped) {
      item.done(absl::CancelledError("the stream was cancelled"));
    }
    if (on_room_) on_room_();
    if (!items.empty()) Process(items);
  }
}

void DynamicBatcher::Process(std::vector<Item>& items) {
  const absl::Time start = absl::Now();
  std::vector<torch::Tensor> inputs;
  std::vector<int64_t> sizes;
  for (const Item& item : items) {
    inputs.push_back(item.inputs);
    sizes.push_back(item.inputs.size(0));
    if (metrics_ != nullptr) metrics_->ObserveQueueDelay(start - item.enqueued);
  }
  // Each item's logits, or, when a stream asks for hidden states, each
  // item's states (the forward stops before the head): those streams get
  // the states, the others logits from them.
  bool hidden = false;
  for (const Item& item : items) {
    hidden |= item.header.encoding() == v1::HIDDEN_FP16;
  }
  hidden = hidden && model_->hidden != nullptr;
  auto outputs = TorchCall("teacher forward", [&] {
    torch::Tensor batch =
        inputs.size() == 1 ? inputs[0] : torch::cat(inputs, 0);
    torch::Tensor out = hidden ? model_->hidden(batch) : model_->forward(batch);
    if (out.dim() < 2 || out.size(0) != batch.size(0)) {
      throw std::runtime_error(absl::StrCat(
          "the teacher returned ", out.dim() == 0 ? 0 : out.size(0),
          " rows for ", batch.size(0), " samples"));
    }
    return out.split_with_sizes(sizes, 0);
  });
  if (metrics_ != nullptr) {
    int64_t samples = 0;
    for (int64_t s : sizes) samples += s;
    metrics_->ObserveForward(static_cast<int>(samples),
                             static_cast<int>(items.size()));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    Item& item = items[i];
    if (!outputs.ok()) {
      item.done(outputs.status());
      continue;
    }
    absl::StatusOr<v1::SoftTargets> answer;
    if (hidden && item.header.encoding() == v1::HIDDEN_FP16 &&
        !item.indices.defined()) {
      answer = EncodeTargets(
          losses::TeacherTargets::FromHidden((*outputs)[i], model_->head,
                                             item.header.temperature()),
          v1::HIDDEN_FP16);
    } else {
      // The logits: the forward's, or the head over its hidden states.
      auto z = hidden ? TorchCall(
                            "the teacher's output head",
                            [&] { return model_->head->Logits((*outputs)[i]); })
                      : absl::StatusOr<torch::Tensor>((*outputs)[i]);
      if (!z.ok()) {
        answer = z.status();
      } else if (item.indices.defined()) {
        // Log-probabilities at the batch's ids, normalized over every class.
        answer = EncodeAtIndices(*z, item.header.temperature(), item.indices);
      } else {
        answer = EncodeLogits(*z, item.header);
      }
    }
    if (metrics_ != nullptr)
      metrics_->ObserveLatency(absl::Now() - item.enqueued);
    item.done(std::move(answer));
  }
}

}  // namespace distill::teacher
