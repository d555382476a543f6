#include "common/matmul.h"

#include <ATen/Context.h>

#include <unordered_map>
#include <vector>

#include "common/linear.h"

// Set by common/CMakeLists.txt when oneDNN's headers and library are found.
#ifndef DISTILL_HAVE_ONEDNN
#define DISTILL_HAVE_ONEDNN 0
#endif
#if DISTILL_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace distill {
namespace {

using torch::Tensor;

// oneDNN describes at most 12 dimensions.
constexpr int64_t kMaxDims = 12;

#if DISTILL_HAVE_ONEDNN

dnnl::memory::desc Describe(const Tensor& t) {
  return dnnl::memory::desc(
      dnnl::memory::dims(t.sizes().begin(), t.sizes().end()),
      dnnl::memory::data_type::f32,
      dnnl::memory::dims(t.strides().begin(), t.strides().end()));
}

// alpha * (a @ b) on oneDNN's matmul primitive into a new contiguous tensor;
// undefined when oneDNN does not take these layouts.
Tensor OneDnnProduct(const Tensor& a, const Tensor& b, const Tensor& bias,
                     float alpha) {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  std::vector<int64_t> out_shape(a.sizes().begin(), a.sizes().end());
  out_shape.back() = b.size(-1);
  Tensor out = torch::empty(out_shape, a.options());
  try {
    dnnl::primitive_attr attr;
    // The scratchpad comes from LibTorch's allocator, one per call, so
    // threads that multiply at once never share one.
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (alpha != 1.0f) {
      dnnl::post_ops ops;
#if DNNL_VERSION_MAJOR >= 3
      ops.append_eltwise(dnnl::algorithm::eltwise_linear, alpha, 0.0f);
#else
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, alpha, 0.0f);
#endif
      attr.set_post_ops(ops);
    }
    const dnnl::memory::desc a_desc = Describe(a), b_desc = Describe(b),
                             out_desc = Describe(out);
    // The bias as oneDNN broadcasts it: [1, ..., 1, N].
    std::vector<int64_t> bias_shape(out_shape.size(), 1);
    bias_shape.back() = out_shape.back();
    const dnnl::memory::desc bias_desc =
        bias.defined() ? Describe(bias.view(bias_shape)) : dnnl::memory::desc();
#if DNNL_VERSION_MAJOR >= 3
    const dnnl::matmul::primitive_desc pd(engine, a_desc, b_desc, bias_desc,
                                          out_desc, attr);
#else
    const dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(a_desc, b_desc, bias_desc, out_desc), attr, engine);
#endif
    const Tensor scratch = torch::empty(
        {static_cast<int64_t>(pd.scratchpad_desc().get_size())}, torch::kByte);
    dnnl::stream stream(engine);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(a_desc, engine, a.data_ptr())},
        {DNNL_ARG_WEIGHTS, dnnl::memory(b_desc, engine, b.data_ptr())},
        {DNNL_ARG_DST, dnnl::memory(out_desc, engine, out.data_ptr())},
        {DNNL_ARG_SCRATCHPAD,
         dnnl::memory(pd.scratchpad_desc(), engine, scratch.data_ptr())}};
    if (bias.defined()) {
      args.emplace(DNNL_ARG_BIAS,
                   dnnl::memory(bias_desc, engine, bias.data_ptr()));
    }
    dnnl::matmul(pd).execute(stream, args);
    stream.wait();
  } catch (const dnnl::error&) {
    return {};
  }
  return out;
}

#endif  // DISTILL_HAVE_ONEDNN

// alpha * (a @ b) + bias (undefined: none) without autograd: oneDNN on the
// tensors as they lie, then on contiguous copies (oneDNN refuses some
// strides, e.g. an expanded gradient's zeros), then torch::matmul.
Tensor Product(const Tensor& a, const Tensor& b, double alpha,
               const Tensor& bias = {}) {
#if DISTILL_HAVE_ONEDNN
  const Tensor dense_bias = bias.defined() ? bias.contiguous() : bias;
  Tensor out = OneDnnProduct(a, b, dense_bias, static_cast<float>(alpha));
  if (!out.defined()) {
    out = OneDnnProduct(a.contiguous(), b.contiguous(), dense_bias,
                        static_cast<float>(alpha));
  }
  if (out.defined()) return out;
#endif
  Tensor out_plain = torch::matmul(a, b);
  if (alpha != 1.0) out_plain.mul_(alpha);
  return bias.defined() ? out_plain.add_(bias) : out_plain;
}

class MatmulFunction : public torch::autograd::Function<MatmulFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& a,
                        const Tensor& b, double alpha) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["alpha"] = alpha;
    return Product(a, b, alpha);
  }

  // d(a) = alpha * g @ b^T, d(b) = alpha * a^T @ g, both on oneDNN with
  // the transposes as strides.
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    const std::vector<Tensor> saved = ctx->get_saved_variables();
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const Tensor& g = grads[0];
    Tensor grad_a, grad_b;
    if (ctx->needs_input_grad(0)) {
      grad_a = Product(g, saved[1].transpose(-2, -1), alpha);
    }
    if (ctx->needs_input_grad(1)) {
      grad_b = Product(saved[0].transpose(-2, -1), g, alpha);
    }
    return {grad_a, grad_b, Tensor()};
  }
};

// x @ weight^T + bias for a 2-D x: the product and its three gradients on
// oneDNN, on LibTorch's dense tensors as they are (no oneDNN layouts).
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  // `bias` is an empty tensor when there is none: LibTorch's custom
  // functions take no undefined inputs.
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                        const Tensor& weight, const Tensor& bias,
                        bool has_bias) {
    ctx->save_for_backward({x, weight});
    ctx->saved_data["bias"] = has_bias;
    return Product(x, weight.t(), 1.0, has_bias ? bias : Tensor());
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    const std::vector<Tensor> saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) grad_x = Product(g, saved[1], 1.0);
    if (ctx->needs_input_grad(1)) grad_weight = Product(g.t(), saved[0], 1.0);
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = g.sum(0);
    }
    return {grad_x, grad_weight, grad_bias, Tensor()};
  }
};

}  // namespace

Tensor OneDnnLinear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (bias.defined()) return LinearFunction::apply(x, weight, bias, true);
  return LinearFunction::apply(x, weight, torch::empty({0}, x.options()),
                               false);
}

bool OneDnnMatmulAvailable() { return DISTILL_HAVE_ONEDNN != 0; }

Tensor Matmul(const Tensor& a, const Tensor& b, double alpha) {
  const bool fast =
      OneDnnMatmulAvailable() && FastLinearEnabled() &&
      at::globalContext().userEnabledMkldnn() && a.device().is_cpu() &&
      b.device().is_cpu() && a.scalar_type() == torch::kFloat &&
      b.scalar_type() == torch::kFloat && a.dim() >= 2 && a.dim() <= kMaxDims &&
      a.dim() == b.dim() &&
      a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2) &&
      a.size(-1) == b.size(-2) && a.numel() > 0 && b.numel() > 0;
  if (!fast) {
    const Tensor out = torch::matmul(a, b);
    return alpha == 1.0 ? out : out * alpha;
  }
  return MatmulFunction::apply(a, b, alpha);
}

}  // namespace distill
