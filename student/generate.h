// Text continuation by a trained language model: token ids in, token ids
// out. A zoo LM keeps a KvCache, so each new token costs one position; a
// TorchScript LM runs its whole forward again for every token. Sampling is
// greedy (temperature 0) or from softmax(logits / temperature) cut to the
// smallest set of tokens whose probability reaches top_p, with its own
// seeded generator (the run's global RNG is untouched). Not thread-safe
// with respect to `model`.
#ifndef DISTILL_STUDENT_GENERATE_H_
#define DISTILL_STUDENT_GENERATE_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "student/model.h"

namespace distill::student {

struct GenerateOptions {
  // Tokens to add, >= 0; fewer when `stop_id` comes or the model's context
  // is full. Default: 50.
  int64_t max_new_tokens = 50;
  // 0: always the most likely token; > 0: sampled. Default: 0.
  double temperature = 0;
  // Nucleus sampling's probability mass, in (0, 1]. Default: 1.
  double top_p = 1;
  uint64_t seed = 0;
  // A TorchScript LM sees at most this many of the last tokens (its
  // positions are unknown here: give the window length it was trained
  // on); 0 feeds the whole sequence. Zoo LMs stop at their own context
  // length instead. Default: 0.
  int64_t window = 0;
  // Stop after generating this id (the tokenizer's end of document); -1
  // never stops early. Default: -1.
  int64_t stop_id = -1;
  // GenerateBatch only: also record the k most likely ids (largest logits)
  // of every position the model was fed (BatchSample::top_ids), in [0, the
  // vocabulary]; 0: none. Default: 0.
  int64_t top_ids = 0;
};

// Continues `prompt` (ids < the model's vocabulary, at least one) and
// returns the new ids only. InvalidArgument when the prompt is empty, or
// (zoo LMs) has an id out of the vocabulary or fills the model's context
// already; the options out of range are InvalidArgument too. The model is run
// in eval mode and left so.
absl::StatusOr<std::vector<int64_t>> Generate(
    Model& model, const std::vector<int64_t>& prompt,
    const GenerateOptions& options);

// What GenerateBatch wrote.
struct BatchSample {
  // int64 [N, P + G]: each row's prompt, then its G = max_new_tokens new
  // tokens.
  torch::Tensor tokens;
  // int64 [N]: each row's tokens up to and including its first stop id
  // among the new ones; P + G when none came. Tokens past it were still
  // sampled (the batch runs in step) and are not meaningful.
  torch::Tensor lengths;
  // With options.top_ids = k > 0: int64 [N, P + G - 1, k], position j's k
  // largest logits' ids (in decreasing order), j being each fed position
  // (the prompt's, then every new token but the last). Else undefined.
  torch::Tensor top_ids;
};

// Continues every row of `prompts` (int64 [N, P], N and P >= 1) by exactly
// options.max_new_tokens tokens, all rows at once through a zoo LM's
// KvCache: each new token costs the batch one position. The draws for the
// whole batch come from one generator seeded by options.seed, so the same
// prompts, weights and seed give the same tokens. options.window is unused.
// InvalidArgument for a TorchScript or image model, ids outside the
// vocabulary, P + max_new_tokens - 1 positions beyond the context (the
// last new token is never fed back), or options out of
// range. The model's train/eval mode is restored afterwards; no gradient
// is recorded.
absl::StatusOr<BatchSample> GenerateBatch(Model& model,
                                          const torch::Tensor& prompts,
                                          const GenerateOptions& options);

// The next ids from `logits` ([V] or [N, V]) as `options` sample them:
// argmax when temperature is 0, else draws from softmax(logits /
// temperature) cut to the top_p nucleus. Returns int64 [] or [N]. Shared
// by Generate and GenerateBatch so a test can follow either with full
// forwards.
torch::Tensor SampleNext(const torch::Tensor& logits,
                         const GenerateOptions& options,
                         torch::Generator& generator);

}  // namespace distill::student

#endif  // DISTILL_STUDENT_GENERATE_H_
