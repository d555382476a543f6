// A frozen copy of a model for inference only, as teachers run: each
// BatchNorm folded into the conv or linear layer that feeds it, dropout
// dropped, and conv and linear layers run by oneDNN with their weights
// converted once and, between convs, activations kept in oneDNN's layout.
// LibTorch's eager conv reorders its weight and input on every call, and
// its linear calls the system BLAS (Debian's netlib reference BLAS unless
// OpenBLAS is installed): on the zoo teacher (batch 128, 2 threads) this
// halves the forward's time. Outputs match the model's eval-mode forward
// to float rounding (1e-5 relative).
//
// Zoo models are prepared; a TorchScript model, or a zoo model with a layer
// this cannot prepare (a BatchNorm without running statistics), runs its
// own eval-mode forward instead, and prepared() says which. forward() of a
// prepared model reads only its own constant tensors, so several threads
// may call it at once.
#ifndef DISTILL_STUDENT_INFERENCE_H_
#define DISTILL_STUDENT_INFERENCE_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "student/model.h"

namespace distill::student {

struct InferenceOptions {
  // Run conv and linear layers on oneDNN directly (when LibTorch was built
  // with it) rather than through LibTorch's eager ops. Default: true.
  bool onednn = true;
};

class InferenceModel {
 public:
  // Prepares `model` from its current weights and BatchNorm running
  // statistics; later changes to `model` do not reach a prepared copy (the
  // eager fallback keeps using `model` itself and puts it in eval mode).
  // InternalError when LibTorch fails while preparing.
  static absl::StatusOr<std::unique_ptr<InferenceModel>> Create(
      std::shared_ptr<Model> model, const InferenceOptions& options = {});

  // Logits for a batch, without autograd history. Throws c10::Error like any
  // LibTorch call.
  torch::Tensor forward(const torch::Tensor& inputs) const;

  // True when the layers were prepared; false for the eager fallback.
  bool prepared() const { return !steps_.empty(); }
  // "prepared for oneDNN: 2 conv, 2 linear, 2 BatchNorm folded" or
  // "eager: <why>".
  const std::string& how() const { return how_; }
  Model& model() const { return *model_; }

  // One prepared layer; defined in inference.cc.
  struct Step;

 private:
  InferenceModel() = default;

  std::shared_ptr<Model> model_;
  std::vector<std::shared_ptr<const Step>> steps_;
  std::string how_;
};

}  // namespace distill::student

#endif  // DISTILL_STUDENT_INFERENCE_H_
