// Language-model evaluation (trainer/internal/evaluate.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <vector>

#include "common/labels.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/loader.h"
#include "trainer/internal/evaluate.h"

namespace distill::trainer {
namespace {

// Sums over one batch's predicted positions.
struct TokenCounts {
  double loss_sum = 0;
  int64_t tokens = 0;
  int64_t correct = 0;
  int64_t agree = 0;
  // Per token-frequency bucket (double [B] and int64 [B]), when asked.
  torch::Tensor bucket_loss;
  torch::Tensor bucket_tokens;
};

// The teacher's most likely token at every position of `targets` (for
// sampled targets, the most often drawn one).
torch::Tensor TeacherTop1(const losses::TeacherTargets& targets) {
  if (targets.form == losses::TeacherTargets::Form::kDense) {
    return targets.probs.argmax(-1);
  }
  if (targets.form == losses::TeacherTargets::Form::kHidden) {
    // Logits a chunk of positions at a time, as the loss computes them.
    const torch::Tensor rows =
        targets.hidden.reshape({-1, targets.hidden.size(-1)});
    std::vector<torch::Tensor> top1;
    for (int64_t at = 0; at < rows.size(0); at += 1024) {
      top1.push_back(targets.head
                         ->Logits(rows.narrow(
                             0, at, std::min<int64_t>(1024, rows.size(0) - at)))
                         .argmax(-1));
    }
    return torch::cat(top1).reshape(targets.batch_shape());
  }
  return targets.indices.gather(-1, targets.values.argmax(-1, true))
      .squeeze(-1);
}

// Adds one chunk of logits [T, V] with labels [T] (and the teacher's top-1
// [T] when defined) to `counts`; `token_bucket` as EvaluateLanguageModel's.
void Count(const torch::Tensor& logits, const torch::Tensor& labels,
           const torch::Tensor& teacher_top1, const torch::Tensor& token_bucket,
           TokenCounts& counts) {
  const torch::Tensor losses = torch::nn::functional::cross_entropy(
      logits, labels,
      torch::nn::functional::CrossEntropyFuncOptions()
          .ignore_index(kIgnoreLabel)
          .reduction(torch::kNone));
  counts.loss_sum += losses.sum().item<double>();
  const torch::Tensor real = labels.ne(kIgnoreLabel);
  if (token_bucket.defined()) {
    const torch::Tensor kept = real.nonzero().squeeze(1);
    const torch::Tensor bucket =
        token_bucket.index_select(0, labels.index_select(0, kept));
    counts.bucket_loss.index_add_(
        0, bucket, losses.index_select(0, kept).to(torch::kDouble));
    counts.bucket_tokens.index_add_(0, bucket, torch::ones_like(bucket));
  }
  const torch::Tensor top1 = logits.argmax(-1);
  counts.tokens += real.sum().item<int64_t>();
  counts.correct += (top1.eq(labels) & real).sum().item<int64_t>();
  if (teacher_top1.defined()) {
    counts.agree += (top1.eq(teacher_top1) & real).sum().item<int64_t>();
  }
}

// Runs every batch of `dataset` through `model` (already in eval mode).
absl::Status CountDataset(student::Model& model, const data::Dataset& dataset,
                          int64_t batch_size, int64_t chunk_tokens,
                          TeacherClient* teacher,
                          const torch::Tensor& token_bucket,
                          TokenCounts& counts) {
  std::vector<int64_t> ids(dataset.size());
  std::iota(ids.begin(), ids.end(), 0);
  data::LoaderOptions options;
  options.batch_size = batch_size;
  data::Loader loader(dataset, std::move(ids), options);
  student::ZooModule* zoo = model.zoo_module();
  while (true) {
    DISTILL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
    if (!batch) return absl::OkStatus();
    torch::Tensor teacher_top1;
    if (teacher != nullptr) {
      absl::StatusOr<losses::TeacherTargets> targets =
          teacher->Targets(*batch, 1.0);
      DISTILL_RETURN_IF_ERROR(
          Annotate(targets.status(), "teacher targets for evaluation"));
      DISTILL_ASSIGN_OR_RETURN(
          teacher_top1,
          TorchCall("the teacher's top token for evaluation",
                    [&] { return TeacherTop1(*targets).reshape({-1}); }));
    }
    DISTILL_RETURN_IF_ERROR(TorchCall("evaluating the language model", [&] {
      torch::NoGradGuard no_grad;
      const torch::Tensor labels = batch->labels.reshape({-1});
      if (zoo == nullptr) {
        const torch::Tensor logits = model.forward(batch->inputs);
        Count(logits.reshape({-1, logits.size(-1)}), labels, teacher_top1,
              token_bucket, counts);
        return;
      }
      const torch::Tensor hidden = zoo->Hidden(batch->inputs, nullptr);
      const torch::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
      const torch::Tensor head = zoo->HeadWeight();
      for (int64_t at = 0; at < flat.size(0); at += chunk_tokens) {
        const int64_t n = std::min(chunk_tokens, flat.size(0) - at);
        Count(torch::matmul(flat.narrow(0, at, n), head.t()),
              labels.narrow(0, at, n),
              teacher_top1.defined() ? teacher_top1.narrow(0, at, n)
                                     : torch::Tensor(),
              token_bucket, counts);
      }
    }));
  }
}

}  // namespace

absl::StatusOr<EvalResult> EvaluateLanguageModel(
    student::Model& model, const data::Dataset& dataset, int64_t batch_size,
    int64_t chunk_tokens, TeacherClient* teacher, bool restore_train,
    const torch::Tensor& token_bucket) {
  TokenCounts counts;
  if (token_bucket.defined()) {
    const int64_t buckets =
        token_bucket.numel() == 0 ? 0 : token_bucket.max().item<int64_t>() + 1;
    counts.bucket_loss = torch::zeros({buckets}, torch::kDouble);
    counts.bucket_tokens = torch::zeros({buckets}, torch::kLong);
  }
  model.train(false);
  const absl::Status counted = CountDataset(
      model, dataset, batch_size, chunk_tokens, teacher, token_bucket, counts);
  model.train(restore_train);
  DISTILL_RETURN_IF_ERROR(counted);
  EvalResult result;
  result.language_model = true;
  result.samples = counts.tokens;
  if (counts.tokens > 0) {
    result.loss = counts.loss_sum / counts.tokens;
    result.perplexity = std::exp(result.loss);
    result.accuracy = static_cast<double>(counts.correct) / counts.tokens;
    if (teacher != nullptr) {
      result.teacher_agreement =
          static_cast<double>(counts.agree) / counts.tokens;
    }
  }
  for (int64_t b = 0; token_bucket.defined() && b < counts.bucket_loss.numel();
       ++b) {
    const int64_t n = counts.bucket_tokens[b].item<int64_t>();
    result.bucket_tokens.push_back(n);
    result.bucket_loss.push_back(
        n > 0 ? counts.bucket_loss[b].item<double>() / n : 0.0);
  }
  return result;
}

absl::StatusOr<std::optional<double>> TeacherNllOfSamples(
    student::Model& model, const data::Dataset& dataset, int64_t batch_size,
    TeacherClient& teacher, const OnPolicyOptions& on_policy,
    bool restore_train) {
  std::vector<int64_t> ids(dataset.size());
  std::iota(ids.begin(), ids.end(), 0);
  data::LoaderOptions options;
  options.batch_size = batch_size;
  data::Loader loader(dataset, std::move(ids), options);
  double nll_sum = 0;
  int64_t tokens = 0;
  int64_t batch_index = 0;
  // The teacher's probability of each sampled token is wanted, not its
  // values at the student's top ids.
  OnPolicyOptions sampling = on_policy;
  sampling.student_top_k = 0;
  // Whether to ask the teacher at the sampled tokens (INDEX_LOGP): when
  // its usual targets lack some tokens' probabilities (top-k, sampled).
  bool at_tokens = false;
  absl::Status status = [&]() -> absl::Status {
    while (true) {
      DISTILL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
      if (!batch) return absl::OkStatus();
      const int64_t p = on_policy.prompt_tokens;
      DISTILL_ASSIGN_OR_RETURN(
          const SampledWindows windows,
          SampleWindows(model, batch->inputs.narrow(1, 0, p),
                        batch->inputs.size(1) + 1, sampling,
                        on_policy.seed + static_cast<uint64_t>(batch_index++)));
      data::Batch sampled = SampledBatch(batch->ids, windows, p);
      const torch::Tensor at_labels = sampled.labels.clamp_min(0).unsqueeze(-1);
      if (at_tokens) sampled.teacher_indices = at_labels;
      absl::StatusOr<losses::TeacherTargets> targets =
          teacher.Targets(sampled, 1.0);
      DISTILL_RETURN_IF_ERROR(Annotate(
          targets.status(), "teacher scores of the student's samples"));
      using Form = losses::TeacherTargets::Form;
      if (!at_tokens && targets->form != Form::kDense &&
          targets->form != Form::kHidden) {
        if (!teacher.scores_at_indices()) {
          tokens = -1;
          return absl::OkStatus();
        }
        at_tokens = true;
        sampled.teacher_indices = at_labels;
        targets = teacher.Targets(sampled, 1.0);
        DISTILL_RETURN_IF_ERROR(Annotate(
            targets.status(), "teacher scores of the student's samples"));
      }
      DISTILL_RETURN_IF_ERROR(
          TorchCall("the teacher's likelihood of the student's samples", [&] {
            const torch::Tensor labels = sampled.labels;
            const torch::Tensor real = labels.ne(kIgnoreLabel);
            const torch::Tensor at =
                at_tokens ? targets->values
                          : targets->Materialized().probs.gather(-1, at_labels);
            const torch::Tensor p =
                at.squeeze(-1)
                    .to(torch::kDouble)
                    .clamp_min(std::numeric_limits<float>::min());
            nll_sum += -(p.log() * real).sum().item<double>();
            tokens += real.sum().item<int64_t>();
          }));
    }
  }();
  model.train(restore_train);
  DISTILL_RETURN_IF_ERROR(status);
  if (tokens <= 0) return std::nullopt;
  return nll_sum / tokens;
}

}  // namespace distill::trainer
