// ONNX export of a folded network (QatNet::ExportPlan) with the ONNX
// project's own protobuf classes, checked by onnx::checker before it is
// written. Opset 13. Two forms:
//  - FP32: Conv / Gemm with the BatchNorm-folded float weights and biases;
//  - INT8 in QDQ form, what ONNX Runtime and TensorRT run in INT8: every
//    quantized layer's input passes QuantizeLinear -> DequantizeLinear
//    (per tensor, int8 zero point 0), and its weights are stored as int8
//    with a per-channel DequantizeLinear (axis 0, int8 zero points 0); the
//    weight's QuantizeLinear is applied at export (the int8 initializer is
//    its output), as ONNX Runtime's own quantizer stores weights, so the
//    file holds one byte per weight. Biases stay float.
// Input "input" [batch, C, H, W] float; output "logits" [batch, classes].
// Stateless and thread-safe.
#ifndef DISTILL_STUDENT_QAT_ONNX_EXPORT_H_
#define DISTILL_STUDENT_QAT_ONNX_EXPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "student/qat/qat_net.h"

namespace distill::student::qat {

inline constexpr int64_t kOnnxOpset = 13;

struct OnnxExportOptions {
  // {C, H, W} of one sample. Required.
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  // QDQ INT8 (true) or FP32 (false). Default: true.
  bool int8 = true;
  // The graph's name. Default: "student".
  std::string graph_name = "student";
};

// Builds a graph node by node, naming every tensor uniquely.
class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(onnx::GraphProto* graph) : graph_(graph) {}
  // Adds `t` as initializer `name` (AddOnnxInitializer); returns the name.
  std::string Initializer(const std::string& name, const torch::Tensor& t);
  // Adds a node of `op` (default domain) named after it.
  onnx::NodeProto* Node(const std::string& op,
                        const std::vector<std::string>& inputs,
                        const std::string& output);
  // A name not used before: "<stem>_<n>".
  std::string Fresh(const std::string& stem);
  onnx::GraphProto* graph() { return graph_; }

 private:
  onnx::GraphProto* graph_;
  int counter_ = 0;
};

// An initializer from a tensor: INT8 for int8, UINT8 for uint8, INT32 for
// int32, INT64 for int64, FLOAT for anything else (converted).
void AddOnnxInitializer(onnx::GraphProto* graph, const std::string& name,
                        const torch::Tensor& t);
// An INTS attribute on `node`.
void IntsAttribute(onnx::NodeProto* node, const std::string& name,
                   const std::vector<int64_t>& values);
// An INT attribute on `node`.
void SetIntAttribute(onnx::NodeProto* node, const std::string& name,
                     int64_t value);

// onnx::checker::check_model as a Status: Internal with the checker's
// message, naming `what` ("the ONNX checker refused the <what>: ...").
absl::Status CheckOnnxModel(const onnx::ModelProto& model,
                            const std::string& what);

// Builds the model and runs onnx::checker::check_model on it.
// InvalidArgument when the plan is empty or a quantized layer lacks scales;
// Internal with the checker's message when the checker refuses the model.
absl::StatusOr<onnx::ModelProto> BuildOnnxModel(
    const std::vector<ExportStep>& plan, const OnnxExportOptions& options);

// Serializes `model` to `path` atomically; returns the file size in bytes.
absl::StatusOr<int64_t> WriteOnnxModel(const onnx::ModelProto& model,
                                       const std::string& path);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_ONNX_EXPORT_H_
