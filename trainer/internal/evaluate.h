// Evaluation on a held-out split. Images: accuracy overall and per class (an
// average can hide the one class that matters), plus the hard-label cross
// entropy. Language models: per-token cross entropy, perplexity, next-token
// accuracy and top-1 agreement with the teacher, over the positions whose
// label is not kIgnoreLabel.
#ifndef DISTILL_TRAINER_INTERNAL_EVALUATE_H_
#define DISTILL_TRAINER_INTERNAL_EVALUATE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "student/model.h"
#include "trainer/internal/on_policy.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

struct EvalResult {
  double accuracy = 0;  // next-token accuracy for a language model
  double loss = 0;      // mean cross entropy (per token for an LM)
  std::vector<double> per_class_accuracy;  // images only
  int64_t samples = 0;                     // images, or predicted tokens
  // Language models only.
  bool language_model = false;
  double perplexity = 0;  // exp(loss)
  // Share of tokens where the student's most likely next token is the
  // teacher's; negative when there was no teacher.
  double teacher_agreement = -1;
  // With token buckets: the mean cross entropy of the positions whose label
  // is in bucket b, and how many there were.
  std::vector<double> bucket_loss;
  std::vector<int64_t> bucket_tokens;

  // {"<split>_accuracy", "<split>_loss", ...}; `split` is "test" or
  // "validation".
  nlohmann::json ToJson(const std::string& split = "test") const;
};

// Runs `model` in eval mode over the whole `dataset` and restores its
// previous training mode flag to train(`restore_train`).
absl::StatusOr<EvalResult> Evaluate(student::Model& model,
                                    const data::Dataset& dataset,
                                    int64_t batch_size, bool restore_train);

// Evaluates any forward function (e.g. the QAT stage's fake-quantized
// network, already in eval mode) the same way, without autograd. When given,
// `predictions` receives each sample's argmax and `logits` the [N, C]
// logits, in dataset order.
absl::StatusOr<EvalResult> EvaluateForward(
    const std::function<torch::Tensor(const torch::Tensor&)>& forward,
    const data::Dataset& dataset, int64_t batch_size,
    std::vector<int64_t>* predictions = nullptr,
    torch::Tensor* logits = nullptr);

// Windows per forward when a language model of `seq_len` positions is
// evaluated: 4,096 positions' worth, at least one. Its teacher answers
// batches of this many rows too (the agreement), besides training's.
inline int64_t LmEvalWindows(int64_t seq_len) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(seq_len, 1));
}

// A language model over token windows, in eval mode and without autograd,
// restored to train(`restore_train`) after. A zoo LM's head runs over
// `chunk_tokens` positions at a time, so its [N, S, V] logits are never all
// alive; a TorchScript LM's forward gives them whole. `teacher`, when not
// null, is asked for targets of the same batches for the agreement.
// `token_bucket`, when defined, is an int64 [V] bucket id in [0, B) per
// token, and the result has each bucket's loss.
absl::StatusOr<EvalResult> EvaluateLanguageModel(
    student::Model& model, const data::Dataset& dataset, int64_t batch_size,
    int64_t chunk_tokens, TeacherClient* teacher, bool restore_train,
    const torch::Tensor& token_bucket = {});

// How much the teacher likes what the student writes (GKD's and MiniLLM's
// measure): each window of `dataset` keeps its first
// options.prompt_tokens, the student (a zoo LM) samples on as an on-policy
// step does (SampleWindows; batch i seeded options.seed + i), and the
// teacher scores the sampled windows at T = 1. Returns the mean over the
// sampled tokens before each row's stop id of -log p_teacher(token), p
// floored at the smallest normal float. A teacher whose targets do not give
// every token's probability (top-k or sampled encodings) is asked at the
// sampled tokens instead (teacher_indices) when it scores at indices;
// std::nullopt when it does not. The student is restored to
// train(`restore_train`).
absl::StatusOr<std::optional<double>> TeacherNllOfSamples(
    student::Model& model, const data::Dataset& dataset, int64_t batch_size,
    TeacherClient& teacher, const OnPolicyOptions& options, bool restore_train);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_EVALUATE_H_
