// A trainable or frozen model, whichever its source: a zoo architecture
// (student/zoo.h) or a TorchScript module saved from Python. The trainer,
// the teacher and the checkpoints see only this class. Not thread-safe:
// one owner runs forward/backward at a time.
#ifndef DISTILL_STUDENT_MODEL_H_
#define DISTILL_STUDENT_MODEL_H_

#include <torch/script.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "student/zoo.h"

namespace distill::student {

struct ModelSpec {
  // Exactly one of `arch` (zoo) and `torchscript` (file path) is set.
  std::string arch;
  std::string torchscript;
  std::map<std::string, double> options;
};

class Model {
 public:
  // Builds a zoo model or loads a TorchScript file. NotFound for a missing
  // file, InvalidArgument for a file TorchScript cannot read, and the zoo's
  // errors for bad architectures or options.
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec,
                                                       const ZooInput& input);

  // Logits for a batch. Throws c10::Error like any LibTorch call: callers run
  // it inside their TorchCall boundary.
  torch::Tensor forward(const torch::Tensor& inputs);

  void train(bool on);
  std::vector<torch::Tensor> parameters();
  // Parameters and buffers by their dotted names (the checkpoint keys).
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters();
  std::vector<std::pair<std::string, torch::Tensor>> named_buffers();
  int64_t num_parameters();

  // "cnn_student", or "torchscript:<file name>".
  const std::string& description() const { return description_; }
  bool is_torchscript() const { return script_.has_value(); }
  // The zoo module (null for TorchScript models), for tools that rewrite the
  // network layer by layer (the QAT stage). Owned by this Model.
  ZooModule* zoo_module() { return zoo_.get(); }

  // Writes parameters and buffers under "model/" and the description under
  // "model_description".
  absl::Status Save(torch::serialize::OutputArchive& archive);
  // Reads what Save wrote. FailedPrecondition when the archive holds another
  // architecture, or a parameter is missing or has another shape (named).
  absl::Status Load(torch::serialize::InputArchive& archive,
                    const std::string& source);

  // Loads weights from a model.pt or checkpoint file written by Save.
  absl::Status LoadFile(const std::string& path);
  // Writes a model.pt holding only the weights, atomically.
  absl::Status SaveFile(const std::string& path);
  // Saves a TorchScript model back (TorchScript sources only), atomically,
  // so Python can torch.jit.load it with the trained weights.
  absl::Status SaveTorchScript(const std::string& path);

 private:
  Model() = default;

  std::string description_;
  std::shared_ptr<ZooModule> zoo_;
  std::optional<torch::jit::Module> script_;
};

}  // namespace distill::student

#endif  // DISTILL_STUDENT_MODEL_H_
