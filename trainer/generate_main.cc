// The `distill_generate` binary: continues a prompt with a language model
// trained by `distill` (a zoo gpt or a TorchScript LM), tokenized with the
// tokenizer its data was prepared with.
//
//   distill_generate --config job.pbtxt --prompt "In the beginning"
//                    [--weights FILE] [--max_new_tokens 50]
//                    [--temperature 0] [--top_p 1] [--seed 0] [--samples 1]
//
// The config is the one the model was trained with: its `student` names the
// architecture, its data.dir the prepared text (tokenizer.model and token
// files), and its run_dir holds model.pt (the default --weights). Exit
// status 0, or 1 with one "distill_generate: error: ..." line.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/malloc_tuning.h"
#include "common/status.h"
#include "data/spm_text.h"
#include "losses/plugin_loader.h"
#include "losses/registry.h"
#include "trainer/config.h"
#include "trainer/internal/job.h"
#include "trainer/internal/lm_text.h"

ABSL_FLAG(std::string, config, "",
          "The job config the model was trained with.");
ABSL_FLAG(std::string, weights, "",
          "Weights to load (model.pt or a checkpoint); default: model.pt in "
          "the config's run_dir. A TorchScript student without weights runs "
          "as saved.");
ABSL_FLAG(std::string, prompt, "", "The text to continue.");
ABSL_FLAG(int64_t, max_new_tokens, 50, "Tokens to generate at most.");
ABSL_FLAG(double, temperature, 0,
          "0: always the most likely token (greedy); > 0: sample from the "
          "softened distribution.");
ABSL_FLAG(double, top_p, 1,
          "Sample only from the most likely tokens holding this much "
          "probability, in (0, 1].");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the sampling.");
ABSL_FLAG(int32_t, samples, 1,
          "Continuations to print; sample k uses seed + k.");

namespace {

namespace fs = std::filesystem;
using ::distill::trainer::JobConfig;

int Fail(const std::string& message) {
  std::fprintf(stderr, "distill_generate: error: %s\n", message.c_str());
  return 1;
}

absl::Status Run(const std::string& config_path) {
  DISTILL_ASSIGN_OR_RETURN(const std::string text,
                           distill::trainer::ReadConfigFile(config_path));
  DISTILL_ASSIGN_OR_RETURN(const std::vector<std::string> plugins,
                           distill::trainer::ConfigPlugins(text, config_path));
  for (const std::string& plugin : plugins) {
    DISTILL_RETURN_IF_ERROR(distill::losses::LoadLossPlugin(
        plugin, distill::losses::LossRegistry::Global()));
  }
  DISTILL_ASSIGN_OR_RETURN(const JobConfig config,
                           distill::trainer::ParseJobConfig(text, config_path));
  if (config.data().dataset() != "tokens") {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, " trains on ", config.data().dataset(),
        ", not on text: generation needs a language-model job (data.dataset "
        "\"tokens\")"));
  }
  DISTILL_ASSIGN_OR_RETURN(const std::unique_ptr<distill::data::Dataset> test,
                           distill::trainer::LoadTokenSplit(
                               config, distill::data::TokenSplit::kTest));
  DISTILL_ASSIGN_OR_RETURN(
      const std::string tokenizer,
      distill::trainer::JobTokenizer(config.data().dir(), *test));
  const distill::student::ZooInput input{test->input_shape(),
                                         test->num_classes(), true};
  DISTILL_ASSIGN_OR_RETURN(
      std::unique_ptr<distill::student::Model> model,
      distill::student::Model::Create(
          distill::trainer::SpecOf(config.student()), input));
  std::string weights = absl::GetFlag(FLAGS_weights);
  if (weights.empty() && !model->is_torchscript()) {
    weights = (fs::path(config.run_dir()) / "model.pt").string();
  }
  if (!weights.empty()) {
    DISTILL_RETURN_IF_ERROR(
        distill::Annotate(model->LoadFile(weights), "loading the weights"));
  }
  DISTILL_ASSIGN_OR_RETURN(
      const std::vector<int64_t> prompt,
      distill::data::EncodeText(tokenizer, absl::GetFlag(FLAGS_prompt)));

  distill::student::GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.top_p = absl::GetFlag(FLAGS_top_p);
  options.stop_id = distill::data::kEosId;
  options.window = config.data().seq_len();
  for (int k = 0; k < absl::GetFlag(FLAGS_samples); ++k) {
    options.seed = absl::GetFlag(FLAGS_seed) + k;
    DISTILL_ASSIGN_OR_RETURN(
        std::vector<int64_t> ids,
        distill::student::Generate(*model, prompt, options));
    std::vector<int64_t> all = prompt;
    all.insert(all.end(), ids.begin(), ids.end());
    DISTILL_ASSIGN_OR_RETURN(const std::string out,
                             distill::data::DecodeIds(tokenizer, all));
    std::printf("%s\n", out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  // Large tensors reused from the heap, not faulted in again every step.
  distill::TuneMallocForTensors();
  absl::SetProgramUsageMessage(
      "distill_generate --config FILE --prompt TEXT: continue a prompt with "
      "a trained language model");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    return Fail(std::string("unexpected argument '") + rest[1] + "'");
  }
  if (absl::GetFlag(FLAGS_config).empty()) {
    return Fail("--config FILE is required");
  }
  if (absl::GetFlag(FLAGS_prompt).empty()) {
    return Fail("--prompt TEXT is required");
  }
  if (absl::GetFlag(FLAGS_samples) < 1) return Fail("--samples must be >= 1");
  const absl::Status status = Run(absl::GetFlag(FLAGS_config));
  if (!status.ok()) return Fail(std::string(status.message()));
  return 0;
}
