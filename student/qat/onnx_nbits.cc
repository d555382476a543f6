#include "student/qat/onnx_nbits.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "student/qat/onnx_export.h"

namespace distill::student::qat {
namespace {

void SetMatrixInfo(onnx::ValueInfoProto* info, const std::string& name,
                   int64_t columns) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("rows");
  shape->add_dim()->set_dim_value(columns);
}

}  // namespace

absl::Status AddMatMulNBitsWeights(onnx::GraphProto* graph,
                                   const std::string& name,
                                   const torch::Tensor& weight,
                                   const GroupQuantParams& params,
                                   const GroupQuantSpec& spec) {
  DISTILL_RETURN_IF_ERROR(CheckGroupQuantSpec(spec));
  if (spec.bits != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", name,
                     "': ONNX Runtime's MatMulNBits (1.20) takes 4-bit "
                     "weights only, not ",
                     spec.bits, "; 8-bit weights export as QDQ"));
  }
  if (weight.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", name, "' has a weight of ", weight.dim(),
                     " dimensions, not [out, in]"));
  }
  DISTILL_RETURN_IF_ERROR(CheckGroupQuantFits(spec, name, weight.size(1)));
  return TorchCall(
      absl::StrCat("packing layer '", name, "' for MatMulNBits"), [&] {
        const MatMulNBitsWeights packed = PackMatMulNBits(
            QuantizeGroupwise(weight, params, spec), params, spec);
        AddOnnxInitializer(graph, name + ".B", packed.b);
        AddOnnxInitializer(graph, name + ".scales", packed.scales);
        if (packed.zero_points.defined()) {
          AddOnnxInitializer(graph, name + ".zero_points", packed.zero_points);
        }
      });
}

void AddMatMulNBitsNode(onnx::GraphProto* graph, const std::string& name,
                        const std::string& input, const std::string& output,
                        int64_t n, int64_t k, const GroupQuantSpec& spec,
                        const torch::Tensor& bias) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type("MatMulNBits");
  node->set_domain(kOnnxRuntimeDomain);
  node->set_name(name);
  node->add_input(input);
  node->add_input(name + ".B");
  node->add_input(name + ".scales");
  if (!spec.symmetric) node->add_input(name + ".zero_points");
  const std::string product = bias.defined() ? name + ".product" : output;
  node->add_output(product);
  SetIntAttribute(node, "K", k);
  SetIntAttribute(node, "N", n);
  SetIntAttribute(node, "bits", spec.bits);
  SetIntAttribute(node, "block_size", spec.group_size);
  if (bias.defined()) {
    AddOnnxInitializer(graph, name + ".bias", bias);
    onnx::NodeProto* add = graph->add_node();
    add->set_op_type("Add");
    add->set_name(name + ".add_bias");
    add->add_input(product);
    add->add_input(name + ".bias");
    add->add_output(output);
  }
}

absl::Status AddMatMulNBits(onnx::GraphProto* graph, const std::string& name,
                            const std::string& input, const std::string& output,
                            const torch::Tensor& weight,
                            const torch::Tensor& bias,
                            const GroupQuantParams& params,
                            const GroupQuantSpec& spec) {
  DISTILL_RETURN_IF_ERROR(
      AddMatMulNBitsWeights(graph, name, weight, params, spec));
  AddMatMulNBitsNode(graph, name, input, output, weight.size(0), weight.size(1),
                     spec, bias);
  return absl::OkStatus();
}

absl::StatusOr<onnx::ModelProto> MatMulNBitsLinearModel(
    const torch::Tensor& weight, const torch::Tensor& bias,
    const GroupQuantParams& params, const GroupQuantSpec& spec) {
  onnx::ModelProto model;
  model.set_ir_version(7);  // the IR version of opset 13
  model.set_producer_name("distill");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  opset = model.add_opset_import();
  opset->set_domain(kOnnxRuntimeDomain);
  opset->set_version(1);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("linear");
  if (weight.dim() != 2) {
    return absl::InvalidArgumentError("the weight must be [out, in]");
  }
  SetMatrixInfo(graph->add_input(), "x", weight.size(1));
  DISTILL_RETURN_IF_ERROR(
      AddMatMulNBits(graph, "linear", "x", "y", weight, bias, params, spec));
  SetMatrixInfo(graph->add_output(), "y", weight.size(0));
  DISTILL_RETURN_IF_ERROR(CheckOnnxModel(model, "MatMulNBits model"));
  return model;
}

}  // namespace distill::student::qat
