#include "student/gpt.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/linear.h"
#include "common/matmul.h"

namespace distill::student {
namespace {

using torch::indexing::Slice;

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t d_model, int64_t heads, double dropout)
      : heads_(heads),
        qkv_(register_module("qkv", torch::nn::Linear(d_model, 3 * d_model))),
        proj_(register_module("proj", torch::nn::Linear(d_model, d_model))),
        attn_drop_(register_module("attn_drop", torch::nn::Dropout(dropout))),
        resid_drop_(
            register_module("resid_drop", torch::nn::Dropout(dropout))) {}

  // x: [N, s, D] for positions past .. past + s - 1; `k_cache`/`v_cache`
  // hold the keys and values of positions 0 .. past - 1 ([N, h, past, hd],
  // undefined when past == 0) and are extended in place.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* k_cache,
                        torch::Tensor* v_cache) {
    const int64_t n = x.size(0), s = x.size(1), d = x.size(2);
    const int64_t hd = d / heads_;
    std::vector<torch::Tensor> qkv =
        Linear(x, qkv_->weight, qkv_->bias).split(d, -1);
    auto heads = [&](const torch::Tensor& t) {
      return t.view({n, s, heads_, hd}).transpose(1, 2);
    };
    torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
    int64_t past = 0;
    if (k_cache != nullptr) {
      if (k_cache->defined()) {
        past = k_cache->size(2);
        k = torch::cat({*k_cache, k}, 2);
        v = torch::cat({*v_cache, v}, 2);
      }
      *k_cache = k;
      *v_cache = v;
    }
    torch::Tensor att = Matmul(q, k.transpose(-2, -1),
                               1.0 / std::sqrt(static_cast<double>(hd)));
    // Query i (at position past + i) sees keys 0 .. past + i.
    const torch::Tensor future =
        torch::ones({s, past + s},
                    torch::dtype(torch::kBool).device(x.device()))
            .triu(past + 1);
    att = att.masked_fill(future, -std::numeric_limits<float>::infinity());
    att = attn_drop_(torch::softmax(att, -1));
    torch::Tensor y = Matmul(att, v).transpose(1, 2).reshape({n, s, d});
    return resid_drop_(Linear(y, proj_->weight, proj_->bias));
  }

 private:
  int64_t heads_;
  torch::nn::Linear qkv_;
  torch::nn::Linear proj_;
  torch::nn::Dropout attn_drop_;
  torch::nn::Dropout resid_drop_;
};
TORCH_MODULE(Attention);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const GptOptions& o)
      : ln1_(register_module(
            "ln1",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})))),
        attn_(
            register_module("attn", Attention(o.d_model, o.heads, o.dropout))),
        ln2_(register_module(
            "ln2",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})))),
        fc_(register_module("fc", torch::nn::Linear(o.d_model, o.d_ff))),
        proj_(register_module("proj", torch::nn::Linear(o.d_ff, o.d_model))),
        drop_(register_module("drop", torch::nn::Dropout(o.dropout))) {}

  torch::Tensor forward(torch::Tensor x, torch::Tensor* k_cache,
                        torch::Tensor* v_cache) {
    x = x + attn_->forward(ln1_(x), k_cache, v_cache);
    const torch::Tensor hidden =
        torch::gelu(Linear(ln2_(x), fc_->weight, fc_->bias));
    return x + drop_(Linear(hidden, proj_->weight, proj_->bias));
  }

 private:
  torch::nn::LayerNorm ln1_;
  Attention attn_;
  torch::nn::LayerNorm ln2_;
  torch::nn::Linear fc_;
  torch::nn::Linear proj_;
  torch::nn::Dropout drop_;
};
TORCH_MODULE(Block);

}  // namespace

GptImpl::GptImpl(const GptOptions& o) : options_(o) {
  wte_ = register_module("wte", torch::nn::Embedding(o.vocab_size, o.d_model));
  wpe_ = register_module("wpe", torch::nn::Embedding(o.context, o.d_model));
  drop_ = register_module("drop", torch::nn::Dropout(o.dropout));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) blocks_->push_back(Block(o));
  ln_f_ = register_module(
      "ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})));
  if (!o.tied_embedding) {
    lm_head_ = register_module(
        "lm_head",
        torch::nn::Linear(
            torch::nn::LinearOptions(o.d_model, o.vocab_size).bias(false)));
  }
  // GPT-2's initialization: N(0, 0.02) for weights, residual projections
  // scaled by 1/sqrt(2 * layers), zero biases.
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * o.layers);
  for (auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    if (name.find("ln") != std::string::npos) continue;
    if (name.size() >= 4 && name.substr(name.size() - 4) == "bias") {
      p.value().zero_();
    } else if (name.size() >= 11 &&
               name.substr(name.size() - 11) == "proj.weight") {
      p.value().normal_(0.0, residual_std);
    } else {
      p.value().normal_(0.0, 0.02);
    }
  }
}

torch::Tensor GptImpl::Hidden(const torch::Tensor& tokens, KvCache* cache) {
  const int64_t past =
      cache != nullptr && !cache->keys.empty() && cache->keys[0].defined()
          ? cache->keys[0].size(2)
          : 0;
  const int64_t s = tokens.size(1);
  TORCH_CHECK(past + s <= options_.context, "sequence of ", past + s,
              " tokens is longer than the model's context of ",
              options_.context);
  if (cache != nullptr && cache->keys.empty()) {
    cache->keys.resize(options_.layers);
    cache->values.resize(options_.layers);
  }
  const torch::Tensor positions = torch::arange(
      past, past + s, torch::dtype(torch::kLong).device(tokens.device()));
  torch::Tensor x = drop_(wte_(tokens) + wpe_(positions));
  for (int64_t i = 0; i < options_.layers; ++i) {
    x = blocks_[i]->as<BlockImpl>()->forward(
        x, cache != nullptr ? &cache->keys[i] : nullptr,
        cache != nullptr ? &cache->values[i] : nullptr);
  }
  return ln_f_(x);
}

torch::Tensor GptImpl::HeadWeight() {
  return lm_head_ ? lm_head_->weight : wte_->weight;
}

torch::Tensor GptImpl::forward(torch::Tensor tokens) {
  return Linear(Hidden(tokens, nullptr), HeadWeight());
}

}  // namespace distill::student
