// `gpt`: a decoder-only causal transformer language model in the style of
// GPT-2 / nanoGPT: token and learned position embeddings, pre-LayerNorm
// blocks of causal self-attention and a GELU MLP, a final LayerNorm and an
// output head (tied to the token embedding or its own). Parameter names
// follow nanoGPT ("wte", "blocks.0.attn.qkv", "ln_f", "lm_head"), so they are
// the checkpoint keys. Not thread-safe: one owner runs it at a time.
#ifndef DISTILL_STUDENT_GPT_H_
#define DISTILL_STUDENT_GPT_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "student/zoo.h"

namespace distill::student {

// Where quantization enters a Gpt (student/qat/gpt_quant.h): every weight
// matrix is read through Weight() and every Linear's input through Input(),
// so training, evaluation and generation all run the quantized model. Layer
// names: "wte" (the token embedding, and the head when tied), "wpe",
// "blocks.<i>.attn.qkv", "blocks.<i>.attn.proj", "blocks.<i>.fc",
// "blocks.<i>.proj", and "lm_head" (the head's input, and its weight when
// not tied).
class GptQuantizer {
 public:
  virtual ~GptQuantizer() = default;
  // The weight `layer` computes with, given its float `weight`.
  virtual torch::Tensor Weight(const std::string& layer,
                               const torch::Tensor& weight) = 0;
  // The input Linear `layer` computes with, given the float `x`.
  virtual torch::Tensor Input(const std::string& layer,
                              const torch::Tensor& x) = 0;
};

struct GptOptions {
  int64_t vocab_size = 0;
  int64_t context = 256;  // longest sequence (position embeddings)
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t d_model = 128;
  int64_t d_ff = 512;
  double dropout = 0.0;
  bool tied_embedding = true;
};

class GptImpl : public ZooModule {
 public:
  explicit GptImpl(const GptOptions& options);

  // Logits [N, S, V] for token ids [N, S] (S <= context).
  torch::Tensor forward(torch::Tensor tokens) override;
  // Language models have no layer-by-layer form.
  std::vector<LayerOp> Layers() override { return {}; }

  bool is_language_model() const override { return true; }
  int64_t context_length() const override { return options_.context; }
  torch::Tensor Hidden(const torch::Tensor& tokens, KvCache* cache) override;
  torch::Tensor HeadWeight() override;

  const GptOptions& options() const { return options_; }
  // Routes weights and Linear inputs through `quantizer` (not owned; it
  // must outlive its use), or runs in float again when null.
  void SetQuantizer(GptQuantizer* quantizer);
  GptQuantizer* quantizer() const { return quantizer_; }
  // The float weight of every matrix by the layer names above, Linear
  // layers first in forward order, then "wte" and "wpe"; the head is
  // "lm_head" only when it is not tied.
  std::vector<std::pair<std::string, torch::Tensor>> QuantizableWeights();

 private:
  GptOptions options_;
  torch::nn::Embedding wte_{nullptr};
  torch::nn::Embedding wpe_{nullptr};
  torch::nn::Dropout drop_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
  torch::nn::Linear lm_head_{nullptr};  // null when tied
  GptQuantizer* quantizer_ = nullptr;
};
TORCH_MODULE(Gpt);

}  // namespace distill::student

#endif  // DISTILL_STUDENT_GPT_H_
