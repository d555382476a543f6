#include "student/gpt.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/linear.h"
#include "common/matmul.h"

namespace distill::student {
namespace {

using torch::indexing::Slice;

// x W^T + b of the Linear `layer`, through `q` when there is one.
torch::Tensor QuantLinear(GptQuantizer* q, const std::string& layer,
                          const torch::Tensor& x,
                          const torch::nn::Linear& linear) {
  if (q == nullptr) return Linear(x, linear->weight, linear->bias);
  return Linear(q->Input(layer, x), q->Weight(layer, linear->weight),
                linear->bias);
}

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const std::string& name, int64_t d_model, int64_t heads,
                double dropout)
      : name_(name),
        heads_(heads),
        qkv_(register_module("qkv", torch::nn::Linear(d_model, 3 * d_model))),
        proj_(register_module("proj", torch::nn::Linear(d_model, d_model))),
        attn_drop_(register_module("attn_drop", torch::nn::Dropout(dropout))),
        resid_drop_(
            register_module("resid_drop", torch::nn::Dropout(dropout))) {}

  // x: [N, s, D] for positions past .. past + s - 1; `k_cache`/`v_cache`
  // hold the keys and values of positions 0 .. past - 1 ([N, h, past, hd],
  // undefined when past == 0) and are extended in place.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* k_cache,
                        torch::Tensor* v_cache, GptQuantizer* quantizer) {
    const int64_t n = x.size(0), s = x.size(1), d = x.size(2);
    const int64_t hd = d / heads_;
    std::vector<torch::Tensor> qkv =
        QuantLinear(quantizer, name_ + ".qkv", x, qkv_).split(d, -1);
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
    return resid_drop_(QuantLinear(quantizer, name_ + ".proj", y, proj_));
  }

 private:
  std::string name_;
  int64_t heads_;
  torch::nn::Linear qkv_;
  torch::nn::Linear proj_;
  torch::nn::Dropout attn_drop_;
  torch::nn::Dropout resid_drop_;
};
TORCH_MODULE(Attention);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const std::string& name, const GptOptions& o)
      : name_(name),
        ln1_(register_module(
            "ln1",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})))),
        attn_(register_module(
            "attn", Attention(name + ".attn", o.d_model, o.heads, o.dropout))),
        ln2_(register_module(
            "ln2",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})))),
        fc_(register_module("fc", torch::nn::Linear(o.d_model, o.d_ff))),
        proj_(register_module("proj", torch::nn::Linear(o.d_ff, o.d_model))),
        drop_(register_module("drop", torch::nn::Dropout(o.dropout))) {}

  torch::Tensor forward(torch::Tensor x, torch::Tensor* k_cache,
                        torch::Tensor* v_cache, GptQuantizer* quantizer) {
    x = x + attn_->forward(ln1_(x), k_cache, v_cache, quantizer);
    const torch::Tensor hidden =
        torch::gelu(QuantLinear(quantizer, name_ + ".fc", ln2_(x), fc_));
    return x + drop_(QuantLinear(quantizer, name_ + ".proj", hidden, proj_));
  }

  // This block's Linear layers by name, in forward order.
  void AddLinears(std::vector<std::pair<std::string, torch::Tensor>>& out) {
    out.emplace_back(name_ + ".attn.qkv",
                     attn_->named_parameters()["qkv.weight"]);
    out.emplace_back(name_ + ".attn.proj",
                     attn_->named_parameters()["proj.weight"]);
    out.emplace_back(name_ + ".fc", fc_->weight);
    out.emplace_back(name_ + ".proj", proj_->weight);
  }

 private:
  std::string name_;
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
  for (int64_t i = 0; i < o.layers; ++i) {
    blocks_->push_back(Block(absl::StrCat("blocks.", i), o));
  }
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
  torch::Tensor x;
  if (quantizer_ == nullptr) {
    x = wte_(tokens) + wpe_(positions);
  } else {
    x = torch::embedding(quantizer_->Weight("wte", wte_->weight), tokens) +
        torch::embedding(quantizer_->Weight("wpe", wpe_->weight), positions);
  }
  x = drop_(x);
  for (int64_t i = 0; i < options_.layers; ++i) {
    x = blocks_[i]->as<BlockImpl>()->forward(
        x, cache != nullptr ? &cache->keys[i] : nullptr,
        cache != nullptr ? &cache->values[i] : nullptr, quantizer_);
  }
  x = ln_f_(x);
  return quantizer_ == nullptr ? x : quantizer_->Input("lm_head", x);
}

torch::Tensor GptImpl::HeadWeight() {
  if (quantizer_ == nullptr) {
    return lm_head_ ? lm_head_->weight : wte_->weight;
  }
  return lm_head_ ? quantizer_->Weight("lm_head", lm_head_->weight)
                  : quantizer_->Weight("wte", wte_->weight);
}

void GptImpl::SetQuantizer(GptQuantizer* quantizer) { quantizer_ = quantizer; }

std::vector<std::pair<std::string, torch::Tensor>>
GptImpl::QuantizableWeights() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (int64_t i = 0; i < options_.layers; ++i) {
    blocks_[i]->as<BlockImpl>()->AddLinears(out);
  }
  if (lm_head_) out.emplace_back("lm_head", lm_head_->weight);
  out.emplace_back("wte", wte_->weight);
  out.emplace_back("wpe", wpe_->weight);
  return out;
}

torch::Tensor GptImpl::forward(torch::Tensor tokens) {
  return Linear(Hidden(tokens, nullptr), HeadWeight());
}

}  // namespace distill::student
