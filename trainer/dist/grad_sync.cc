#include "trainer/dist/grad_sync.h"

#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::trainer {

absl::StatusOr<std::unique_ptr<GradSync>> GradSync::Create(
    Communicator& comm,
    std::vector<std::pair<std::string, torch::Tensor>> named_params,
    const GradSyncOptions& options) {
  if (options.first_bucket_bytes <= 0 || options.bucket_cap_bytes <= 0) {
    return absl::InvalidArgumentError("bucket sizes must be > 0");
  }
  std::unique_ptr<GradSync> sync(new GradSync(comm, options));
  for (auto& [name, p] : named_params) {
    if (p.requires_grad()) sync->params_.emplace_back(name, p);
  }
  const int n = static_cast<int>(sync->params_.size());
  sync->bucket_of_.assign(n, -1);
  sync->ready_.assign(n, false);

  // Reverse registration order approximates the order in which backward
  // produces gradients, so the first bucket fills first.
  int64_t bucket_bytes = 0;
  for (int i = n - 1; i >= 0; --i) {
    const torch::Tensor& p = sync->params_[i].second;
    if (p.scalar_type() != torch::kFloat) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", sync->params_[i].first,
                       "' is not float32; gradient buckets hold float32 only"));
    }
    const int64_t bytes = p.numel() * 4;
    const int64_t limit = sync->buckets_.size() <= 1
                              ? options.first_bucket_bytes
                              : options.bucket_cap_bytes;
    if (sync->buckets_.empty() ||
        (bucket_bytes > 0 && bucket_bytes + bytes > limit)) {
      sync->buckets_.emplace_back();
      bucket_bytes = 0;
    }
    Bucket& b = sync->buckets_.back();
    sync->bucket_of_[i] = static_cast<int>(sync->buckets_.size()) - 1;
    b.offsets.push_back(bucket_bytes / 4);
    b.params.push_back(i);
    bucket_bytes += bytes;
  }
  for (auto& b : sync->buckets_) {
    int64_t numel = 0;
    for (int i : b.params) numel += sync->params_[i].second.numel();
    b.flat = torch::zeros({numel});
  }

  DISTILL_RETURN_IF_ERROR(TorchCall("installing gradient hooks", [&] {
    GradSync* self = sync.get();
    for (int i = 0; i < n; ++i) {
      auto acc =
          torch::autograd::impl::grad_accumulator(sync->params_[i].second);
      acc->add_post_hook(
          std::make_unique<torch::autograd::utils::LambdaPostHook>(
              [self, i](const torch::autograd::variable_list& outputs,
                        const torch::autograd::variable_list&) {
                self->OnGradReady(i);
                return outputs;
              }));
      sync->accumulators_.push_back(std::move(acc));
    }
  }));
  return sync;
}

GradSync::~GradSync() = default;

absl::Status GradSync::BroadcastFromRankZero(
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
    const std::string& what) {
  if (comm_.world_size() == 1 || tensors.empty()) return absl::OkStatus();
  std::vector<torch::Tensor> flat_parts;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : tensors)
    flat_parts.push_back(t.detach().reshape(-1).to(torch::kFloat));
  torch::Tensor flat = torch::cat(flat_parts);
  DISTILL_RETURN_IF_ERROR(comm_.Broadcast({flat}, 0, what));
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t k = t.numel();
    t.detach().copy_(
        flat.slice(0, offset, offset + k).view(t.sizes()).to(t.scalar_type()));
    offset += k;
  }
  return absl::OkStatus();
}

void GradSync::BeginBackward(bool sync, int64_t step) {
  sync_ = sync && comm_.world_size() > 1;
  step_ = step;
  ready_total_ = 0;
  first_launched_ = false;
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
  }
  stats_ = GradSyncStats{};
  stats_.buckets = static_cast<int>(buckets_.size());
}

void GradSync::OnGradReady(int i) {
  if (!sync_ || ready_[i]) return;
  ready_[i] = true;
  ++ready_total_;
  Bucket& b = buckets_[bucket_of_[i]];
  ++b.ready;
  if (options_.overlap && b.ready == static_cast<int>(b.params.size())) {
    Launch(bucket_of_[i]);
    ++stats_.launched_in_backward;
  }
}

void GradSync::Launch(int index) {
  Bucket& b = buckets_[index];
  {
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const torch::Tensor& g = params_[b.params[k]].second.grad();
      b.flat.slice(0, b.offsets[k], b.offsets[k] + g.numel())
          .copy_(g.reshape(-1));
    }
  }
  if (!first_launched_) {
    first_launched_ = true;
    stats_.params_pending_at_first_launch =
        static_cast<int>(params_.size()) - ready_total_;
  }
  b.pending =
      comm_.AllReduceSum(b.flat, absl::StrCat("all-reduce of gradient bucket ",
                                              index, " at step ", step_ + 1));
}

absl::Status GradSync::FinishBackward() {
  if (!sync_) return absl::OkStatus();
  std::vector<std::string> missing;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!ready_[i] || !params_[i].second.grad().defined()) {
      missing.push_back(params_[i].first);
    }
  }
  if (!missing.empty()) {
    // Drain what was launched so no collective is left half-done locally.
    for (auto& b : buckets_) {
      if (b.pending) b.pending->Wait().IgnoreError();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", comm_.rank(), ": parameter(s) ", absl::StrJoin(missing, ", "),
        " got no gradient at step ", step_ + 1,
        "; every parameter must take part in the loss on every rank"));
  }
  for (int index = 0; index < static_cast<int>(buckets_.size()); ++index) {
    if (!buckets_[index].pending) Launch(index);
  }
  const float scale = 1.0f / static_cast<float>(comm_.world_size());
  for (auto& b : buckets_) {
    DISTILL_RETURN_IF_ERROR(b.pending->Wait());
    torch::NoGradGuard no_grad;
    b.flat.mul_(scale);
    for (size_t k = 0; k < b.params.size(); ++k) {
      torch::Tensor g = params_[b.params[k]].second.mutable_grad();
      g.copy_(b.flat.slice(0, b.offsets[k], b.offsets[k] + g.numel())
                  .view(g.sizes()));
    }
  }
  return absl::OkStatus();
}

}  // namespace distill::trainer
