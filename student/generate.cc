#include "student/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/linear.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::student {
namespace {

// The next id from `logits` [V].
int64_t Pick(const torch::Tensor& logits, const GenerateOptions& o,
             torch::Generator& generator) {
  if (o.temperature == 0) return logits.argmax().item<int64_t>();
  torch::Tensor probs =
      torch::softmax(logits.to(torch::kDouble) / o.temperature, -1);
  if (o.top_p < 1) {
    auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
    // Keep a token while the mass before it is below top_p: the most
    // likely one always stays.
    const torch::Tensor before = sorted.cumsum(-1) - sorted;
    sorted.masked_fill_(before >= o.top_p, 0);
    probs = torch::zeros_like(probs).scatter_(-1, order, sorted);
  }
  return torch::multinomial(probs, 1, /*replacement=*/false, generator)
      .item<int64_t>();
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> Generate(
    Model& model, const std::vector<int64_t>& prompt,
    const GenerateOptions& o) {
  ZooModule* zoo = model.zoo_module();
  if (zoo != nullptr && !zoo->is_language_model()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", model.description(), "' is not a language model"));
  }
  if (o.max_new_tokens < 0 || o.temperature < 0 || o.window < 0 ||
      !(o.top_p > 0) || o.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation needs max_new_tokens >= 0, temperature >= 0 and top_p in "
        "(0, 1]; got ",
        o.max_new_tokens, ", ", o.temperature, " and ", o.top_p));
  }
  if (prompt.empty()) {
    return absl::InvalidArgumentError("the prompt has no tokens");
  }
  const int64_t context = zoo != nullptr ? zoo->context_length() : 0;
  if (context > 0 && static_cast<int64_t>(prompt.size()) >= context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt has ", prompt.size(), " tokens; '", model.description(),
        "' sees ", context, " at most, so nothing can follow"));
  }
  if (zoo != nullptr) {
    const int64_t vocab = zoo->HeadWeight().size(0);
    for (const int64_t id : prompt) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt token ", id,
                         " is outside the model's vocabulary of ", vocab));
      }
    }
  }
  model.train(false);
  std::vector<int64_t> out;
  DISTILL_RETURN_IF_ERROR(TorchCall("generating text", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    torch::Generator generator = at::detail::createCPUGenerator(o.seed);
    std::vector<int64_t> sequence = prompt;
    KvCache cache;
    torch::Tensor fresh = torch::tensor(prompt, torch::kLong).unsqueeze(0);
    for (int64_t i = 0; i < o.max_new_tokens; ++i) {
      if (context > 0 && static_cast<int64_t>(sequence.size()) >= context) {
        break;
      }
      torch::Tensor logits;
      if (zoo != nullptr) {
        // Only the positions not yet in the cache: the prompt, then one.
        const torch::Tensor hidden = zoo->Hidden(fresh, &cache);
        logits =
            Linear(hidden.select(1, hidden.size(1) - 1), zoo->HeadWeight())[0];
      } else {
        const int64_t size = static_cast<int64_t>(sequence.size());
        const int64_t from =
            o.window > 0 ? std::max<int64_t>(0, size - o.window) : 0;
        const std::vector<int64_t> seen(sequence.begin() + from,
                                        sequence.end());
        logits =
            model.forward(torch::tensor(seen, torch::kLong).unsqueeze(0))[0]
                .select(0, size - from - 1);
      }
      const int64_t next = Pick(logits, o, generator);
      out.push_back(next);
      sequence.push_back(next);
      if (next == o.stop_id) break;
      fresh = torch::tensor({next}, torch::kLong).unsqueeze(0);
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace distill::student
