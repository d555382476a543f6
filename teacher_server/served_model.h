// The model a teacher server serves: a forward function together with what
// Info reports about it (name, weights hash, input and output shapes).
// LoadServedModel builds one from a zoo architecture and weights file or a
// TorchScript file, exactly as the trainer's in-process teacher does; tests
// and benchmarks may fill a ServedModel with any forward function.
// `forward` is not thread-safe: the service calls it from one thread only.
#ifndef DISTILL_TEACHER_SERVER_SERVED_MODEL_H_
#define DISTILL_TEACHER_SERVER_SERVED_MODEL_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "losses/teacher_targets.h"
#include "proto/teacher.pb.h"

namespace distill::teacher {

struct ServedModel {
  // Reported in Info: the architecture or the TorchScript file's base name,
  // and the hex SHA-256 of the weights or TorchScript file.
  std::string name;
  std::string hash;
  // One sample's input, without the batch dimension.
  std::vector<int64_t> input_shape;
  v1::Tensor::DType input_dtype = v1::Tensor::FLOAT32;
  // One sample's logits: [C] or [S, V].
  std::vector<int64_t> output_shape;
  // Language models (integer inputs [S]): hex SHA-256 of the tokenizer
  // model (empty: not given) and S. Empty / 0 otherwise.
  std::string tokenizer_sha256;
  int64_t context_length = 0;
  // Logits [N, output_shape...] for inputs [N, input_shape...]. May throw
  // (c10::Error); the batcher catches at its boundary. The caller holds
  // torch::InferenceMode.
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  // Language models whose logits are a linear head over final hidden states
  // (the zoo's): those states [N, S, H] for token ids [N, S], the head, and
  // its hash (OutputHeadSha256); forward(x) == head->Logits(hidden(x)).
  // Unset otherwise (no HIDDEN_FP16).
  std::function<torch::Tensor(const torch::Tensor&)> hidden;
  std::shared_ptr<const losses::OutputHead> head;
  std::string head_sha256;
  // How `forward` runs, for the server's log (InferenceModel::how(), e.g.
  // "prepared for oneDNN: 2 conv, 2 linear, 2 BatchNorm folded"); empty
  // when a test or benchmark fills `forward` itself.
  std::string how;

  // C or V: the last dimension of output_shape.
  int64_t num_classes() const { return output_shape.back(); }
  // H, or 0 without a separable head.
  int64_t hidden_size() const {
    return head == nullptr ? 0 : head->weight.size(1);
  }
};

// Where a teacher comes from. Exactly one of `arch` and `torchscript` is set.
struct ModelSource {
  // A zoo architecture with its options, and its weights file (required).
  std::string arch;
  std::map<std::string, double> arch_options;
  std::string weights;
  // A TorchScript file.
  std::string torchscript;
  // One sample's input. Default: Fashion-MNIST's [1, 28, 28] float32.
  std::vector<int64_t> input_shape = {1, 28, 28};
  v1::Tensor::DType input_dtype = v1::Tensor::FLOAT32;
  // Zoo models only: classes the architecture is built for. Default: 10.
  // A language model's vocabulary size.
  int64_t num_classes = 10;
  // Language models: the tokenizer model file (e.g. distill_prepare_text's
  // tokenizer.model) the token ids come from; its SHA-256 goes into Info.
  // Empty: not stated (trainers then refuse the teacher for token data).
  std::string tokenizer;
};

// Whether a teacher of these inputs is a language model: integer inputs
// are token ids.
inline bool TakesTokens(v1::Tensor::DType input_dtype) {
  return input_dtype == v1::Tensor::INT32 || input_dtype == v1::Tensor::INT64;
}

// Loads the model in eval mode without gradients, hashes its file (and the
// tokenizer's) and runs one forward on zeros [2, input_shape...] to learn
// the output shape. A language model (integer inputs) must take [S] and
// return [N, S, V].
// NotFound for a missing file; InvalidArgument for a bad source or a model
// whose output is not [N, C] or [N, S, V]; the zoo's and Model's errors.
absl::StatusOr<ServedModel> LoadServedModel(const ModelSource& source);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_SERVED_MODEL_H_
