// The network the QAT stage trains: a zoo model rebuilt from its Layers()
// with a per-tensor quantizer on the input of every Conv2d and Linear
// (where TensorRT and ONNX Runtime put the Q/DQ pair of a quantized layer),
// per-channel weight quantization, and the BatchNorm that follows a conv or
// linear folded into its weights: with batch statistics while training
// until FreezeBatchNorm(), with running statistics after that and in eval.
// The net shares the zoo model's parameters and buffers, so training it
// trains the model (and updates its BatchNorm running statistics).
// Not thread-safe: one owner runs it at a time.
#ifndef DISTILL_STUDENT_QAT_QAT_NET_H_
#define DISTILL_STUDENT_QAT_QAT_NET_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "student/qat/observer.h"
#include "student/zoo.h"

namespace distill::student::qat {

struct QatNetOptions {
  ObserverOptions observer;
  // Conv2d/Linear layers (names as in QuantizableLayers) left in float:
  // neither their input nor their weights are quantized. Default: none.
  std::vector<std::string> skip_layers;
};

// A Conv2d or Linear with its BatchNorm folded (running statistics), as the
// evaluation computes it and the exporter writes it.
struct FoldedLayer {
  std::string name;
  bool conv = false;
  torch::Tensor weight;  // float, folded
  torch::Tensor bias;    // float [C_out], folded
  // False for skipped layers, which have no scales.
  bool quantized = false;
  torch::Tensor weight_scales;  // float [C_out], all > 0
  float input_scale = 0;        // > 0
  // Conv2d only.
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
};

// One op of the folded network, in forward order.
struct ExportStep {
  enum class Kind { kConv, kGemm, kRelu, kMaxPool2x2, kFlatten };
  Kind kind;
  FoldedLayer layer;  // kConv and kGemm only
};

class QatNet {
 public:
  // Rewrites `model` (which must outlive the net). InvalidArgument naming
  // the layer for an op this stage cannot rewrite (a BatchNorm that follows
  // no conv or linear, a conv with string padding), and for a skip_layers
  // entry that names no Conv2d or Linear, listing those that exist.
  static absl::StatusOr<std::unique_ptr<QatNet>> Create(
      ZooModule& model, const QatNetOptions& options);

  // The names of `model`'s Conv2d and Linear layers in forward order.
  static std::vector<std::string> QuantizableLayers(ZooModule& model);

  // Throws c10::Error like any LibTorch call.
  torch::Tensor forward(const torch::Tensor& x);

  // Train mode: dropout on, and BatchNorm batch statistics until frozen.
  void train(bool on) { training_ = on; }
  bool is_training() const { return training_; }
  // While observing, each quantized layer's observer records its input and
  // the layer's input scale follows the observer; the weight scales follow
  // the (folded) weights at every forward. Not observing freezes both.
  void SetObserving(bool on) { observing_ = on; }
  bool observing() const { return observing_; }
  // Fake quantization on (INT8 simulation) or off (the float network).
  // FailedPrecondition when turned on before every quantized layer has
  // observed an input (calibrate first).
  absl::Status SetFakeQuant(bool on);
  bool fake_quant() const { return fake_quant_; }
  // From now on BatchNorm uses (and no longer updates) its running
  // statistics, also in train mode.
  void FreezeBatchNorm() { bn_frozen_ = true; }
  bool batch_norm_frozen() const { return bn_frozen_; }

  // The folded network as eval mode computes it. Throws c10::Error.
  std::vector<ExportStep> ExportPlan();

  const std::vector<std::string>& quantized_layers() const {
    return quantized_;
  }
  const std::vector<std::string>& skipped_layers() const { return skipped_; }

 private:
  struct Unit;
  struct Op {
    LayerOp::Kind kind;
    int unit = -1;  // index into units_ for kConv2d / kLinear
    double dropout = 0;
  };
  QatNet() = default;

  // The folded weight and bias for this forward: batch statistics of `x`
  // in train mode before the freeze (updating the running ones), running
  // statistics otherwise.
  std::pair<torch::Tensor, torch::Tensor> Fold(Unit& unit,
                                               const torch::Tensor& x,
                                               bool batch_stats);
  torch::Tensor Apply(const Unit& unit, const torch::Tensor& x,
                      const torch::Tensor& weight, const torch::Tensor& bias);

  std::vector<Op> ops_;
  std::vector<std::shared_ptr<Unit>> units_;
  std::vector<std::string> quantized_;
  std::vector<std::string> skipped_;
  bool training_ = false;
  bool observing_ = false;
  bool fake_quant_ = false;
  bool bn_frozen_ = false;
};

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_QAT_NET_H_
