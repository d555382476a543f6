// Text to token ids and back with a tokenizer written by
// distill_prepare_text, through Debian's spm_encode / spm_decode run as
// child processes (the sentencepiece library must not share a process with
// LibTorch; see prepare_text.h). For prompts and samples, not corpora.
// Stateless; safe from any thread (each call has its own scratch folder).
#ifndef DISTILL_DATA_SPM_TEXT_H_
#define DISTILL_DATA_SPM_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace distill::data {

// The id distill_prepare_text puts at the end of every document.
inline constexpr uint32_t kEosId = 2;

// The ids of `text` (one line; no end-of-document id). NotFound when the
// model file is missing; Internal with spm_encode's own message when it
// fails; InvalidArgument for a text that encodes to nothing.
absl::StatusOr<std::vector<int64_t>> EncodeText(
    const std::string& tokenizer_model, const std::string& text);

// The text of `ids`; kEosId becomes a line break.
absl::StatusOr<std::string> DecodeIds(const std::string& tokenizer_model,
                                      absl::Span<const int64_t> ids);

}  // namespace distill::data

#endif  // DISTILL_DATA_SPM_TEXT_H_
