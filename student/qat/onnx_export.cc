#include "student/qat/onnx_export.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "onnx/checker.h"
#include "student/model.h"
#include "student/qat/fake_quant.h"

namespace distill::student::qat {
namespace {

void SetValueInfo(onnx::ValueInfoProto* info, const std::string& name,
                  const std::vector<int64_t>& dims) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

void AddOnnxInitializer(onnx::GraphProto* graph, const std::string& name,
                        const torch::Tensor& t) {
  torch::Tensor c = t.detach().contiguous().cpu();
  onnx::TensorProto* init = graph->add_initializer();
  init->set_name(name);
  for (int64_t d : c.sizes()) init->add_dims(d);
  if (c.scalar_type() == torch::kInt8) {
    init->set_data_type(onnx::TensorProto::INT8);
  } else if (c.scalar_type() == torch::kLong) {
    init->set_data_type(onnx::TensorProto::INT64);
  } else if (c.scalar_type() == torch::kInt) {
    init->set_data_type(onnx::TensorProto::INT32);
  } else if (c.scalar_type() == torch::kUInt8) {
    init->set_data_type(onnx::TensorProto::UINT8);
  } else {
    c = c.to(torch::kFloat32);
    init->set_data_type(onnx::TensorProto::FLOAT);
  }
  init->set_raw_data(c.data_ptr(), c.numel() * c.element_size());
}

std::string OnnxGraphBuilder::Initializer(const std::string& name,
                                          const torch::Tensor& t) {
  AddOnnxInitializer(graph_, name, t);
  return name;
}

onnx::NodeProto* OnnxGraphBuilder::Node(const std::string& op,
                                        const std::vector<std::string>& inputs,
                                        const std::string& output) {
  onnx::NodeProto* node = graph_->add_node();
  node->set_op_type(op);
  node->set_name(absl::StrCat(op, "_", graph_->node_size()));
  for (const auto& in : inputs) node->add_input(in);
  node->add_output(output);
  return node;
}

std::string OnnxGraphBuilder::Fresh(const std::string& stem) {
  return absl::StrCat(stem, "_", ++counter_);
}

void IntsAttribute(onnx::NodeProto* node, const std::string& name,
                   const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void SetIntAttribute(onnx::NodeProto* node, const std::string& name,
                     int64_t value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

absl::StatusOr<onnx::ModelProto> BuildOnnxModel(
    const std::vector<ExportStep>& plan, const OnnxExportOptions& options) {
  if (plan.empty()) {
    return absl::InvalidArgumentError("nothing to export: the plan is empty");
  }
  for (const ExportStep& step : plan) {
    const FoldedLayer& l = step.layer;
    if ((step.kind == ExportStep::Kind::kConv ||
         step.kind == ExportStep::Kind::kGemm) &&
        options.int8 && l.quantized &&
        (!l.weight_scales.defined() || !(l.input_scale > 0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", l.name, "' has no quantization scales (calibrate first)"));
    }
  }
  onnx::ModelProto model;
  model.set_ir_version(7);  // the IR version of opset 13
  model.set_producer_name("distill");
  model.set_producer_version("0.1.0");
  model.set_doc_string(options.int8
                           ? "INT8 QDQ model: symmetric int8, per-channel "
                             "weights (axis 0), per-tensor activations"
                           : "FP32 model, BatchNorm folded");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name(options.graph_name);
  SetValueInfo(graph->add_input(), "input", options.input_shape);

  auto built = TorchCall("building the ONNX graph", [&]() -> absl::Status {
    OnnxGraphBuilder g(graph);
    std::string x = "input";
    for (size_t i = 0; i < plan.size(); ++i) {
      const ExportStep& step = plan[i];
      const bool last = i + 1 == plan.size();
      const std::string out = last ? "logits" : g.Fresh("t");
      switch (step.kind) {
        case ExportStep::Kind::kConv:
        case ExportStep::Kind::kGemm: {
          const FoldedLayer& l = step.layer;
          std::string weight;
          if (options.int8 && l.quantized) {
            const std::string scale =
                g.Initializer(l.name + ".input_scale",
                              torch::full(std::vector<int64_t>{}, l.input_scale,
                                          torch::kFloat32));
            const std::string zero = g.Initializer(
                l.name + ".input_zero_point",
                torch::zeros(std::vector<int64_t>{}, torch::kInt8));
            const std::string q = g.Fresh(l.name + ".input_q");
            g.Node("QuantizeLinear", {x, scale, zero}, q);
            const std::string dq = g.Fresh(l.name + ".input_dq");
            g.Node("DequantizeLinear", {q, scale, zero}, dq);
            x = dq;
            const std::string w_q =
                g.Initializer(l.name + ".weight_int8",
                              QuantizeWeightInt8(l.weight, l.weight_scales));
            const std::string w_scale = g.Initializer(
                l.name + ".weight_scale", l.weight_scales.to(torch::kFloat32));
            const std::string w_zero =
                g.Initializer(l.name + ".weight_zero_point",
                              torch::zeros({l.weight.size(0)}, torch::kInt8));
            weight = g.Fresh(l.name + ".weight_dq");
            SetIntAttribute(
                g.Node("DequantizeLinear", {w_q, w_scale, w_zero}, weight),
                "axis", 0);
          } else {
            weight = g.Initializer(l.name + ".weight", l.weight);
          }
          const std::string bias = g.Initializer(l.name + ".bias", l.bias);
          if (step.kind == ExportStep::Kind::kConv) {
            onnx::NodeProto* node = g.Node("Conv", {x, weight, bias}, out);
            IntsAttribute(node, "kernel_shape",
                          {l.weight.size(2), l.weight.size(3)});
            IntsAttribute(node, "strides", l.stride);
            IntsAttribute(
                node, "pads",
                {l.padding[0], l.padding[1], l.padding[0], l.padding[1]});
            IntsAttribute(node, "dilations", l.dilation);
            SetIntAttribute(node, "group", l.groups);
          } else {
            SetIntAttribute(g.Node("Gemm", {x, weight, bias}, out), "transB",
                            1);
          }
          break;
        }
        case ExportStep::Kind::kRelu:
          g.Node("Relu", {x}, out);
          break;
        case ExportStep::Kind::kMaxPool2x2: {
          onnx::NodeProto* node = g.Node("MaxPool", {x}, out);
          IntsAttribute(node, "kernel_shape", {2, 2});
          IntsAttribute(node, "strides", {2, 2});
          break;
        }
        case ExportStep::Kind::kFlatten:
          SetIntAttribute(g.Node("Flatten", {x}, out), "axis", 1);
          break;
      }
      x = out;
    }
    return absl::OkStatus();
  });
  if (!built.ok()) return built;
  SetValueInfo(graph->add_output(), "logits", {options.num_classes});

  DISTILL_RETURN_IF_ERROR(CheckOnnxModel(model, "exported model"));
  return model;
}

absl::Status CheckOnnxModel(const onnx::ModelProto& model,
                            const std::string& what) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("the ONNX checker refused the ", what, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> WriteOnnxModel(const onnx::ModelProto& model,
                                       const std::string& path) {
  DISTILL_RETURN_IF_ERROR(
      WriteFileAtomically(path, [&](const std::string& tmp) -> absl::Status {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out || !model.SerializeToOstream(&out)) {
          return absl::InternalError(absl::StrCat("cannot write ", tmp));
        }
        out.close();
        if (!out)
          return absl::InternalError(absl::StrCat("cannot write ", tmp));
        return absl::OkStatus();
      }));
  return static_cast<int64_t>(std::filesystem::file_size(path));
}

}  // namespace distill::student::qat
