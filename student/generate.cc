#include "student/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/linear.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::student {
namespace {

absl::Status CheckOptions(const GenerateOptions& o) {
  if (o.max_new_tokens < 0 || o.temperature < 0 || o.window < 0 ||
      !(o.top_p > 0) || o.top_p > 1 || o.top_ids < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation needs max_new_tokens >= 0, temperature >= 0, top_p in "
        "(0, 1] and top_ids >= 0; got ",
        o.max_new_tokens, ", ", o.temperature, ", ", o.top_p, " and ",
        o.top_ids));
  }
  return absl::OkStatus();
}

}  // namespace

torch::Tensor SampleNext(const torch::Tensor& logits, const GenerateOptions& o,
                         torch::Generator& generator) {
  if (o.temperature == 0) return logits.argmax(-1);
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
      .squeeze(-1);
}

absl::StatusOr<BatchSample> GenerateBatch(Model& model,
                                          const torch::Tensor& prompts,
                                          const GenerateOptions& o) {
  ZooModule* zoo = model.zoo_module();
  if (zoo == nullptr || !zoo->is_language_model()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batched generation needs a zoo language model (gpt); '",
                     model.description(), "' is not one"));
  }
  DISTILL_RETURN_IF_ERROR(CheckOptions(o));
  if (!prompts.defined() || prompts.dim() != 2 || prompts.size(0) == 0 ||
      prompts.size(1) == 0 ||
      (prompts.scalar_type() != torch::kLong &&
       prompts.scalar_type() != torch::kInt)) {
    return absl::InvalidArgumentError(
        "the prompts must be integer token ids [N, P] with N, P >= 1");
  }
  const int64_t n = prompts.size(0), p = prompts.size(1);
  const int64_t context = zoo->context_length();
  // The last new token is sampled, never fed back.
  if (p + o.max_new_tokens - 1 > context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompts of ", p, " tokens and ", o.max_new_tokens,
                     " new ones need ", p + o.max_new_tokens - 1,
                     " positions; '", model.description(), "' sees ", context));
  }
  BatchSample out;
  const bool was_training = zoo->is_training();
  const absl::Status status =
      TorchCall("generating a batch of text", [&]() -> absl::Status {
        const int64_t vocab = zoo->HeadWeight().size(0);
        const torch::Tensor ids = prompts.to(torch::kLong);
        if (ids.min().item<int64_t>() < 0 ||
            ids.max().item<int64_t>() >= vocab) {
          return absl::InvalidArgumentError(absl::StrCat(
              "a prompt token is outside the model's vocabulary of ", vocab));
        }
        if (o.top_ids > vocab) {
          return absl::InvalidArgumentError(
              absl::StrCat("top_ids ", o.top_ids,
                           " is more than the model's vocabulary of ", vocab));
        }
        model.train(false);
        torch::NoGradGuard no_grad;
        torch::Generator generator = at::detail::createCPUGenerator(o.seed);
        std::vector<torch::Tensor> pieces = {ids};
        KvCache cache;
        torch::Tensor fresh = ids;
        torch::Tensor lengths =
            torch::full({n}, p + o.max_new_tokens, torch::dtype(torch::kLong));
        std::vector<torch::Tensor> top;
        for (int64_t i = 0; i < o.max_new_tokens; ++i) {
          const torch::Tensor hidden = zoo->Hidden(fresh, &cache);
          const torch::Tensor logits =
              Linear(hidden.select(1, hidden.size(1) - 1), zoo->HeadWeight());
          if (o.top_ids > 0) {
            // Every fed position's (the whole prompt's at first), apart
            // from the sampling's logits so the draws do not depend on it.
            const torch::Tensor all = i == 0 ? Linear(hidden, zoo->HeadWeight())
                                             : logits.unsqueeze(1);
            top.push_back(std::get<1>(all.topk(o.top_ids, -1)));
          }
          const torch::Tensor next = SampleNext(logits, o, generator);
          if (o.stop_id >= 0) {
            // The first stop id of a row ends it at p + i + 1 tokens.
            const torch::Tensor ends =
                (next == o.stop_id) & (lengths == p + o.max_new_tokens);
            lengths.masked_fill_(ends, p + i + 1);
          }
          fresh = next.unsqueeze(1);
          pieces.push_back(fresh);
        }
        out.tokens = torch::cat(pieces, 1);
        out.lengths = lengths;
        if (!top.empty()) out.top_ids = torch::cat(top, 1);
        return absl::OkStatus();
      });
  model.train(was_training);
  DISTILL_RETURN_IF_ERROR(status);
  return out;
}

absl::StatusOr<std::vector<int64_t>> Generate(
    Model& model, const std::vector<int64_t>& prompt,
    const GenerateOptions& o) {
  ZooModule* zoo = model.zoo_module();
  if (zoo != nullptr && !zoo->is_language_model()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", model.description(), "' is not a language model"));
  }
  DISTILL_RETURN_IF_ERROR(CheckOptions(o));
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
      const int64_t next = SampleNext(logits, o, generator).item<int64_t>();
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
