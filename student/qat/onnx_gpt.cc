#include "student/qat/onnx_gpt.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "student/qat/fake_quant.h"
#include "student/qat/group_quant.h"
#include "student/qat/onnx_export.h"
#include "student/qat/onnx_nbits.h"

namespace distill::student::qat {
namespace {

torch::Tensor Int64s(const std::vector<int64_t>& values) {
  return torch::tensor(values, torch::kLong);
}

void SetTensorInfo(onnx::ValueInfoProto* info, const std::string& name,
                   onnx::TensorProto::DataType type,
                   const std::vector<int64_t>& dims) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(type);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

class GptExporter {
 public:
  GptExporter(onnx::GraphProto* graph, Gpt model, const GptQuant& quant,
              GptOnnxForm form)
      : g_(graph),
        model_(model),
        quant_(quant),
        form_(form),
        params_(model->named_parameters()) {}

  // The whole graph from "tokens" to "logits".
  void Build(int64_t seq_len) {
    const GptOptions& o = model_->options();
    const bool tied = o.tied_embedding;
    const std::string positions =
        g_.Initializer("positions", torch::arange(seq_len, torch::kLong));
    torch::Tensor mask = torch::zeros({seq_len, seq_len});
    mask.masked_fill_(torch::ones({seq_len, seq_len}, torch::kBool).triu(1),
                      -std::numeric_limits<float>::infinity());
    mask_ = g_.Initializer("causal_mask", mask);
    std::string x =
        Binary("Add", Lookup("wte", "tokens", 2), Lookup("wpe", positions, 1));
    const int64_t d = o.d_model, h = o.heads, hd = d / h;
    for (int64_t i = 0; i < o.layers; ++i) {
      const std::string b = absl::StrCat("blocks.", i);
      const std::string qkv =
          Linear(b + ".attn.qkv", b + ".attn.qkv", LayerNorm(b + ".ln1", x));
      onnx::NodeProto* split = g_.Node(
          "Split", {qkv, g_.Initializer(g_.Fresh("split"), Int64s({d, d, d}))},
          g_.Fresh("q"));
      const std::string k = g_.Fresh("k"), v = g_.Fresh("v");
      split->add_output(k);
      split->add_output(v);
      SetIntAttribute(split, "axis", -1);
      const std::string heads_shape =
          g_.Initializer(g_.Fresh("heads_shape"), Int64s({0, 0, h, hd}));
      auto heads = [&](const std::string& t, std::vector<int64_t> perm) {
        onnx::NodeProto* node = g_.Node(
            "Transpose", {Binary("Reshape", t, heads_shape)}, g_.Fresh("t"));
        IntsAttribute(node, "perm", perm);
        return node->output(0);
      };
      std::string att = Binary("MatMul", heads(split->output(0), {0, 2, 1, 3}),
                               heads(k, {0, 2, 3, 1}));
      att = Binary("Mul", att,
                   g_.Initializer(g_.Fresh("att_scale"),
                                  torch::tensor(1.0 / std::sqrt(hd * 1.0))));
      att = Binary("Add", att, mask_);
      onnx::NodeProto* softmax = g_.Node("Softmax", {att}, g_.Fresh("p"));
      SetIntAttribute(softmax, "axis", -1);
      onnx::NodeProto* merge = g_.Node(
          "Transpose",
          {Binary("MatMul", softmax->output(0), heads(v, {0, 2, 1, 3}))},
          g_.Fresh("y"));
      IntsAttribute(merge, "perm", {0, 2, 1, 3});
      const std::string y =
          Binary("Reshape", merge->output(0),
                 g_.Initializer(g_.Fresh("model_shape"), Int64s({0, 0, d})));
      x = Binary("Add", x, Linear(b + ".attn.proj", b + ".attn.proj", y));
      std::string hidden =
          Linear(b + ".fc", b + ".fc", LayerNorm(b + ".ln2", x));
      hidden = Gelu(hidden);
      x = Binary("Add", x, Linear(b + ".proj", b + ".proj", hidden));
    }
    Linear(tied ? "wte" : "lm_head", "lm_head", LayerNorm("ln_f", x), "logits");
  }

 private:
  std::string Binary(const std::string& op, const std::string& a,
                     const std::string& b) {
    return g_.Node(op, {a, b}, g_.Fresh(op))->output(0);
  }

  std::string Unary(const std::string& op, const std::string& a) {
    return g_.Node(op, {a}, g_.Fresh(op))->output(0);
  }

  std::string Cast(const std::string& a, onnx::TensorProto::DataType to) {
    onnx::NodeProto* node = g_.Node("Cast", {a}, g_.Fresh("cast"));
    SetIntAttribute(node, "to", to);
    return node->output(0);
  }

  std::string Unsqueeze(const std::string& a) {
    return Binary("Unsqueeze", a,
                  g_.Initializer(g_.Fresh("last_axis"), Int64s({-1})));
  }

  std::string Reshape(const std::string& a, const std::vector<int64_t>& shape) {
    return Binary("Reshape", a,
                  g_.Initializer(g_.Fresh("shape"), Int64s(shape)));
  }

  std::string Scalar(const std::string& stem, float value) {
    return g_.Initializer(g_.Fresh(stem), torch::tensor(value));
  }

  std::string LayerNorm(const std::string& name, const std::string& x) {
    onnx::NodeProto* node =
        g_.Node("LayerNormalization",
                {x, g_.Initializer(name + ".weight", params_[name + ".weight"]),
                 g_.Initializer(name + ".bias", params_[name + ".bias"])},
                g_.Fresh(name));
    SetIntAttribute(node, "axis", -1);
    onnx::AttributeProto* eps = node->add_attribute();
    eps->set_name("epsilon");
    eps->set_type(onnx::AttributeProto::FLOAT);
    eps->set_f(1e-5f);
    return node->output(0);
  }

  // 0.5 · x · (1 + erf(x / √2)), LibTorch's exact GELU.
  std::string Gelu(const std::string& x) {
    const std::string erf =
        Unary("Erf", Binary("Div", x, Scalar("sqrt2", std::sqrt(2.0f))));
    return Binary("Mul", Binary("Mul", x, Binary("Add", erf, Scalar("one", 1))),
                  Scalar("half", 0.5f));
  }

  // The float matrix of `layer`, once.
  std::string FloatMatrix(const std::string& layer) {
    auto it = dequantized_.find(layer);
    if (it != dequantized_.end()) return it->second;
    return dequantized_[layer] =
               g_.Initializer(layer + ".weight", params_[layer + ".weight"]);
  }

  // The int8 matrix of `layer` and its DequantizeLinear (axis 0), once.
  std::string Int8Matrix(const std::string& layer) {
    auto it = dequantized_.find(layer);
    if (it != dequantized_.end()) return it->second;
    const torch::Tensor w = params_[layer + ".weight"].detach();
    const torch::Tensor scales = ScalesFromAmax(PerChannelAmax(w));
    onnx::NodeProto* node = g_.Node(
        "DequantizeLinear",
        {g_.Initializer(layer + ".weight_int8", QuantizeWeightInt8(w, scales)),
         g_.Initializer(layer + ".weight_scale", scales),
         g_.Initializer(layer + ".weight_zero_point",
                        torch::zeros({w.size(0)}, torch::kInt8))},
        layer + ".weight_dequantized");
    SetIntAttribute(node, "axis", 0);
    return dequantized_[layer] = node->output(0);
  }

  // The packed 4-bit initializers of `layer` (AWQ-scaled when it has
  // scales), once.
  void Packed(const std::string& layer) {
    if (!packed_.insert(layer).second) return;
    const torch::Tensor w = params_[layer + ".weight"].detach();
    const torch::Tensor s = quant_.AwqScales(layer);
    const torch::Tensor scaled = s.defined() ? w * s.reshape({1, -1}) : w;
    const GroupQuantSpec& spec = quant_.group_spec();
    const GroupQuantParams params = GroupQuantParamsFromWeight(scaled, spec);
    const absl::Status added =
        AddMatMulNBitsWeights(g_.graph(), layer, scaled, params, spec);
    TORCH_CHECK(added.ok(), added.message());
    if (s.defined()) g_.Initializer(layer + ".awq_inverse", 1.0 / s);
  }

  // The 4-bit codes in rows `ids` (of `id_dims` dimensions) of `packed`
  // (uint8 [rows, bytes], two codes a byte, the first in the low nibble):
  // int32 [ids..., 2 * bytes].
  std::string Nibbles(const std::string& packed, const std::string& ids,
                      int id_dims, int64_t bytes) {
    const std::string b =
        Cast(Binary("Gather", packed, ids), onnx::TensorProto::INT32);
    const std::string sixteen =
        g_.Initializer(g_.Fresh("sixteen"), torch::tensor(16, torch::kInt));
    const std::string high = Binary("Div", b, sixteen);
    const std::string low = Binary("Sub", b, Binary("Mul", high, sixteen));
    onnx::NodeProto* pair =
        g_.Node("Concat", {Unsqueeze(low), Unsqueeze(high)}, g_.Fresh("codes"));
    SetIntAttribute(pair, "axis", -1);
    std::vector<int64_t> shape(id_dims, 0);
    shape.push_back(2 * bytes);
    return Reshape(pair->output(0), shape);
  }

  // Rows `ids` (int64 of `id_dims` dimensions) of the matrix `layer`.
  std::string Lookup(const std::string& layer, const std::string& ids,
                     int id_dims) {
    const torch::Tensor w = params_[layer + ".weight"];
    if (form_ == GptOnnxForm::kFloat) {
      return Binary("Gather", FloatMatrix(layer), ids);
    }
    if (form_ == GptOnnxForm::kInt8) {
      return Binary("Gather", Int8Matrix(layer), ids);
    }
    Packed(layer);
    const GroupQuantSpec& spec = quant_.group_spec();
    const int64_t rows = w.size(0), in = w.size(1);
    const int64_t groups = in / spec.group_size;
    std::vector<int64_t> keep(id_dims, 0);
    auto shape = [&](std::vector<int64_t> tail) {
      std::vector<int64_t> out = keep;
      out.insert(out.end(), tail.begin(), tail.end());
      return out;
    };
    std::string codes =
        Reshape(Cast(Nibbles(Reshape(layer + ".B", {rows, in / 2}), ids,
                             id_dims, in / 2),
                     onnx::TensorProto::FLOAT),
                shape({groups, spec.group_size}));
    std::string zero;
    if (spec.symmetric) {
      zero = Scalar("zero_point", 8);
    } else {
      // Each row's zero points, packed like the codes and padded to a byte.
      const int64_t zero_bytes = (groups + 1) / 2;
      zero = Nibbles(Reshape(layer + ".zero_points", {rows, zero_bytes}), ids,
                     id_dims, zero_bytes);
      if (2 * zero_bytes != groups) {
        zero = g_.Node("Slice",
                       {zero, g_.Initializer(g_.Fresh("starts"), Int64s({0})),
                        g_.Initializer(g_.Fresh("ends"), Int64s({groups})),
                        g_.Initializer(g_.Fresh("axes"), Int64s({-1}))},
                       g_.Fresh("zero_points"))
                   ->output(0);
      }
      zero = Unsqueeze(Cast(zero, onnx::TensorProto::FLOAT));
    }
    const std::string scales = Unsqueeze(
        Binary("Gather", Reshape(layer + ".scales", {rows, groups}), ids));
    std::string values =
        Reshape(Binary("Mul", Binary("Sub", codes, zero), scales), shape({in}));
    if (quant_.AwqScales(layer).defined()) {
      values = Binary("Mul", values, layer + ".awq_inverse");
    }
    return values;
  }

  // `input` · weight(`layer`)ᵀ + bias, with the input quantized as the
  // Input() point `input_point` is; the result is named `output` when
  // given.
  std::string Linear(const std::string& layer, const std::string& input_point,
                     const std::string& input, const std::string& output = "") {
    const torch::Tensor w = params_[layer + ".weight"];
    auto bias_it = params_.find(layer + ".bias");
    const torch::Tensor bias = bias_it != nullptr ? *bias_it : torch::Tensor();
    const std::string out = output.empty() ? g_.Fresh(layer) : output;
    if (form_ == GptOnnxForm::kNBits) {
      Packed(layer);
      std::string x = input;
      if (quant_.AwqScales(layer).defined()) {
        x = Binary("Mul", x, layer + ".awq_inverse");
      }
      AddMatMulNBitsNode(g_.graph(), layer, x, out, w.size(0), w.size(1),
                         quant_.group_spec(),
                         bias.defined() ? bias.detach() : torch::Tensor());
      return out;
    }
    std::string x = input;
    std::string weight;
    if (form_ == GptOnnxForm::kInt8) {
      const std::string scale = Scalar(input_point + ".input_scale",
                                       quant_.ActivationScale(input_point));
      const std::string zero =
          g_.Initializer(g_.Fresh(input_point + ".input_zero_point"),
                         torch::zeros({}, torch::kInt8));
      x = g_.Node("DequantizeLinear",
                  {g_.Node("QuantizeLinear", {x, scale, zero},
                           g_.Fresh(input_point + ".input_int8"))
                       ->output(0),
                   scale, zero},
                  g_.Fresh(input_point + ".input_dequantized"))
              ->output(0);
      weight = Int8Matrix(layer);
    } else {
      weight = FloatMatrix(layer);
    }
    onnx::NodeProto* t = g_.Node("Transpose", {weight}, g_.Fresh("weight_t"));
    IntsAttribute(t, "perm", {1, 0});
    if (!bias.defined()) {
      return g_.Node("MatMul", {x, t->output(0)}, out)->output(0);
    }
    return g_
        .Node("Add",
              {Binary("MatMul", x, t->output(0)),
               g_.Initializer(layer + ".bias", bias)},
              out)
        ->output(0);
  }

  OnnxGraphBuilder g_;
  Gpt model_;
  const GptQuant& quant_;
  GptOnnxForm form_;
  torch::OrderedDict<std::string, torch::Tensor> params_;
  std::string mask_;
  // Each matrix's float value (FloatMatrix or Int8Matrix), by layer.
  std::map<std::string, std::string> dequantized_;
  std::set<std::string> packed_;
};

}  // namespace

absl::StatusOr<onnx::ModelProto> BuildGptOnnx(Gpt model, const GptQuant& quant,
                                              GptOnnxForm form,
                                              int64_t seq_len) {
  const GptOptions& o = model->options();
  if (seq_len < 1 || seq_len > o.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ONNX model's sequence length ", seq_len,
                     " is outside [1, the context ", o.context, "]"));
  }
  if (form == GptOnnxForm::kInt8 && !quant.Calibrated()) {
    return absl::FailedPreconditionError(
        "the INT8 export needs calibrated activation ranges");
  }
  onnx::ModelProto onnx_model;
  onnx_model.set_ir_version(8);  // the IR version of opset 17
  onnx_model.set_producer_name("distill");
  onnx::OperatorSetIdProto* opset = onnx_model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kGptOnnxOpset);
  if (form == GptOnnxForm::kNBits) {
    opset = onnx_model.add_opset_import();
    opset->set_domain(kOnnxRuntimeDomain);
    opset->set_version(1);
  }
  onnx::GraphProto* graph = onnx_model.mutable_graph();
  graph->set_name("gpt");
  SetTensorInfo(graph->add_input(), "tokens", onnx::TensorProto::INT64,
                {seq_len});
  DISTILL_RETURN_IF_ERROR(TorchCall("exporting the gpt to ONNX", [&] {
    torch::NoGradGuard no_grad;
    GptExporter(graph, model, quant, form).Build(seq_len);
  }));
  SetTensorInfo(graph->add_output(), "logits", onnx::TensorProto::FLOAT,
                {seq_len, o.vocab_size});
  DISTILL_RETURN_IF_ERROR(CheckOnnxModel(onnx_model, "gpt export"));
  return onnx_model;
}

}  // namespace distill::student::qat
