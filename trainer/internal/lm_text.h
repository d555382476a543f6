// The text side of a language-model job: its tokenizer (the one its token
// files were made with, checked by SHA-256) and the samples an LM job ends
// with. Tokenizing runs spm_encode / spm_decode as child processes
// (data/spm_text.h). Stateless.
#ifndef DISTILL_TRAINER_INTERNAL_LM_TEXT_H_
#define DISTILL_TRAINER_INTERNAL_LM_TEXT_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "student/generate.h"
#include "student/model.h"
#include "trainer/internal/job.h"

namespace distill::trainer {

// <folder>/tokenizer.model of a "tokens" data folder, when its SHA-256 is
// the one `tokens` (a TokenWindows split of that folder) was encoded with;
// FailedPrecondition naming both hashes when it is not, NotFound when the
// file is missing.
absl::StatusOr<std::string> JobTokenizer(const std::string& folder,
                                         const data::Dataset& tokens);

// A few continuations by `model` of the first 16 tokens of windows spread
// over `tokens` (the test split: text the model never trained on), decoded
// with `tokenizer`: [{"prompt": ..., "continuation": ...}, ...].
absl::StatusOr<nlohmann::json> SampleContinuations(
    student::Model& model, const data::Dataset& tokens,
    const std::string& tokenizer, const student::GenerateOptions& options,
    int count);

// SampleContinuations of the job's student over its test split, 3 of 32
// tokens at temperature 0.8 and top-p 0.95 seeded by the config's seed,
// printed when `print`; the student is left in training mode.
absl::StatusOr<nlohmann::json> EndOfJobSamples(Job& job, bool print);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_LM_TEXT_H_
