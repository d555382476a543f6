#include "trainer/internal/lm_text.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "data/spm_text.h"
#include "data/token_windows.h"

namespace distill::trainer {

absl::StatusOr<std::string> JobTokenizer(const std::string& folder,
                                         const data::Dataset& tokens) {
  const std::string path =
      (std::filesystem::path(folder) / "tokenizer.model").string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer ", path, " does not exist"));
  }
  DISTILL_ASSIGN_OR_RETURN(const std::string sha, FileSha256Hex(path));
  const data::TokenFile& file =
      static_cast<const data::TokenWindows&>(tokens).file();
  if (sha != file.info().tokenizer_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer ", path, " (SHA-256 ", sha.substr(0, 12),
                     ") is not the one ", file.path(), " was encoded with (",
                     file.info().tokenizer_sha256.substr(0, 12), ")"));
  }
  return path;
}

absl::StatusOr<nlohmann::json> SampleContinuations(
    student::Model& model, const data::Dataset& tokens,
    const std::string& tokenizer, const student::GenerateOptions& options,
    int count) {
  constexpr int64_t kPromptTokens = 16;
  nlohmann::json samples = nlohmann::json::array();
  for (int i = 0; i < count && tokens.size() > 0; ++i) {
    const int64_t window = tokens.size() * i / count;
    DISTILL_ASSIGN_OR_RETURN(data::Batch batch, tokens.Get({window}));
    const int64_t take = std::min(kPromptTokens, batch.inputs.size(1));
    std::vector<int64_t> prompt(batch.inputs.data_ptr<int64_t>(),
                                batch.inputs.data_ptr<int64_t>() + take);
    DISTILL_ASSIGN_OR_RETURN(std::vector<int64_t> continuation,
                             student::Generate(model, prompt, options));
    DISTILL_ASSIGN_OR_RETURN(std::string prompt_text,
                             data::DecodeIds(tokenizer, prompt));
    DISTILL_ASSIGN_OR_RETURN(std::string continuation_text,
                             data::DecodeIds(tokenizer, continuation));
    samples.push_back(
        {{"prompt", prompt_text}, {"continuation", continuation_text}});
  }
  return samples;
}

absl::StatusOr<nlohmann::json> EndOfJobSamples(Job& job, bool print) {
  student::GenerateOptions generate;
  generate.max_new_tokens = 32;
  generate.temperature = 0.8;
  generate.top_p = 0.95;
  generate.seed = job.config.seed();
  generate.stop_id = data::kEosId;
  generate.window = job.config.data().seq_len();
  absl::StatusOr<nlohmann::json> samples = SampleContinuations(
      *job.model, *job.test, job.tokenizer, generate, /*count=*/3);
  job.model->train(true);
  if (!samples.ok() || !print) return samples;
  for (const auto& sample : *samples) {
    std::printf("sample: %s >>> %s\n",
                sample["prompt"].get<std::string>().c_str(),
                sample["continuation"].get<std::string>().c_str());
  }
  std::fflush(stdout);
  return samples;
}

}  // namespace distill::trainer
