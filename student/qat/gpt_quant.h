// Quantization of a `gpt` language-model student in place (the QAT stage's
// language-model path, docs/QUANTIZATION.md). A GptQuant plugs into the
// model's GptQuantizer hooks, so the model's own forward, its chunked loss
// over the head, evaluation and generation all run quantized, and training
// through it is quantization-aware (straight-through gradients). Modes:
//  - kInt8: every weight matrix INT8 symmetric per output row (Linear
//    layers, the head, and the embeddings, which are weight-only); every
//    Linear's input (the head's too) INT8 per tensor at a scale its range
//    observer proposes. LayerNorm, softmax, GELU and the residual adds stay
//    in float.
//  - kGroupwise: weight-only, every weight matrix in groups of
//    spec.group_size inputs at spec.bits bits (round-to-nearest from the
//    current weight), optionally with AWQ-style input-channel scales per
//    layer searched on captured calibration inputs.
// Not thread-safe: one owner runs the model at a time.
#ifndef DISTILL_STUDENT_QAT_GPT_QUANT_H_
#define DISTILL_STUDENT_QAT_GPT_QUANT_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "student/gpt.h"
#include "student/qat/awq.h"
#include "student/qat/group_quant.h"
#include "student/qat/observer.h"

namespace distill::student::qat {

enum class GptQuantMode { kFloat, kInt8, kGroupwise };

struct GptQuantOptions {
  // Activation ranges of kInt8.
  ObserverOptions observer;
  // Weights of kGroupwise.
  GroupQuantSpec group;
};

// A weight matrix of the model and how its input reaches it.
struct GptQuantLayer {
  std::string name;      // "blocks.0.attn.qkv", "wte", ...
  torch::Tensor weight;  // the model's float parameter [out, in]
  // The Input() name whose values multiply this weight: the layer itself,
  // "lm_head" for a tied "wte", empty for "wpe" (and an untied "wte"),
  // which are only looked up.
  std::string input;
  // Whether the AWQ-style search scales it: every matrix that only
  // multiplies (Linear layers, an untied head). Not a tied "wte": its
  // scales would also reshape the embedding rows' quantization, which the
  // search, measuring the head's output alone, does not see.
  bool awq = false;
};

class GptQuant : public GptQuantizer {
 public:
  // InvalidArgument naming the layer when spec.group_size does not divide a
  // matrix's width (d_model or d_ff), or when `options.group` is not a
  // valid spec. `model` must outlive the GptQuant; it starts in kFloat.
  static absl::StatusOr<std::unique_ptr<GptQuant>> Create(
      Gpt model, const GptQuantOptions& options);
  ~GptQuant() override;  // detaches from the model
  GptQuant(const GptQuant&) = delete;
  GptQuant& operator=(const GptQuant&) = delete;

  // Installs itself in the model in `mode`, or detaches for kFloat.
  void SetMode(GptQuantMode mode);
  GptQuantMode mode() const { return mode_; }

  // kInt8: whether Input() records ranges, and whether it fake-quantizes
  // (needs every Linear's observer to have seen data: Calibrated()).
  void SetObserving(bool observing) { observing_ = observing; }
  bool observing() const { return observing_; }
  void SetActivationQuant(bool on) { activation_quant_ = on; }
  bool Calibrated() const;
  // The INT8 activation scale of Input `layer` (observer amax / 127).
  float ActivationScale(const std::string& layer) const;

  // Any mode (kFloat included): keeps up to `max_rows` rows of each
  // Linear's input until StopCapture, evenly spaced over each forward's
  // rows and spread over at least 8 forwards.
  void StartCapture(int64_t max_rows);
  void StopCapture();

  // kGroupwise: searches AWQ-style scales (grid of `grid` + 1 α values) for
  // every `awq` matrix with captured inputs and keeps those with α > 0; the
  // others stay round-to-nearest. Returns each search, by layer.
  std::vector<std::pair<std::string, AwqSearch>> SearchAwq(int grid = 20);
  void ClearAwq() { awq_scales_.clear(); }
  // The scales of `layer`, undefined when it has none.
  torch::Tensor AwqScales(const std::string& layer) const;

  const std::vector<GptQuantLayer>& layers() const { return layers_; }
  const GroupQuantSpec& group_spec() const { return options_.group; }

  // Bytes of every parameter as `mode` stores it: float32 for kFloat and
  // for biases and LayerNorms; kInt8: one byte a weight and a float scale a
  // row; kGroupwise: spec.bits a weight, a float scale a group, a zero point
  // of spec.bits a group when not symmetric, and float AWQ scales.
  int64_t WeightBytes(GptQuantMode mode) const;

  torch::Tensor Weight(const std::string& layer,
                       const torch::Tensor& weight) override;
  torch::Tensor Input(const std::string& layer,
                      const torch::Tensor& x) override;

 private:
  GptQuant(Gpt model, const GptQuantOptions& options);

  Gpt model_;
  GptQuantOptions options_;
  std::vector<GptQuantLayer> layers_;
  GptQuantMode mode_ = GptQuantMode::kFloat;
  bool observing_ = false;
  bool activation_quant_ = false;
  std::map<std::string, RangeObserver> observers_;
  int64_t capture_rows_ = 0;
  std::map<std::string, std::vector<torch::Tensor>> captured_;
  std::map<std::string, int64_t> captured_count_;
  std::map<std::string, torch::Tensor> awq_scales_;
};

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_GPT_QUANT_H_
