// The oneDNN linear path computes what torch::linear computes, values and
// gradients, and is the path actually taken.
#include "common/linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "common/matmul.h"

namespace distill {
namespace {

struct Grads {
  torch::Tensor out, x, weight, bias;
};

Grads Apply(bool fast, const torch::Tensor& x0, const torch::Tensor& w0,
            const torch::Tensor& b0, const torch::Tensor& upstream) {
  SetFastLinear(fast);
  torch::Tensor x = x0.clone().requires_grad_(true);
  torch::Tensor w = w0.clone().requires_grad_(true);
  torch::Tensor b =
      b0.defined() ? b0.clone().requires_grad_(true) : torch::Tensor();
  torch::Tensor out = Linear(x, w, b);
  out.backward(upstream);
  SetFastLinear(true);
  return {out.detach(), x.grad(), w.grad(),
          b.defined() ? b.grad() : torch::Tensor()};
}

// Names of the autograd nodes from `t` back to the first leaf.
std::string GradPath(const torch::Tensor& t) {
  std::string path;
  for (auto node = t.grad_fn(); node != nullptr;
       node = node->next_edges().empty() ? nullptr
                                         : node->next_edges()[0].function) {
    path += node->name() + " ";
  }
  return path;
}

TEST(LinearTest, OneDnnPathMatchesTorchLinear) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({3, 5, 48});
  const torch::Tensor w = torch::randn({40, 48}) * 0.2;
  const torch::Tensor b = torch::randn({40});
  const torch::Tensor upstream = torch::randn({3, 5, 40});
  for (const bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "no bias");
    const torch::Tensor bias = with_bias ? b : torch::Tensor();
    const Grads plain = Apply(false, x, w, bias, upstream);
    const Grads fast = Apply(true, x, w, bias, upstream);
    // The plain path is torch::linear itself.
    EXPECT_TRUE(torch::equal(plain.out, torch::linear(x, w, bias)));
    EXPECT_TRUE(torch::allclose(fast.out, plain.out, 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(fast.x, plain.x, 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(fast.weight, plain.weight, 1e-4, 1e-4));
    if (with_bias) {
      EXPECT_TRUE(torch::allclose(fast.bias, plain.bias, 1e-4, 1e-4));
    }
  }
}

TEST(LinearTest, FloatCpuTensorsTakeTheOneDnnPath) {
  const torch::Tensor x = torch::randn({4, 8}).requires_grad_(true);
  const torch::Tensor w = torch::randn({6, 8}).requires_grad_(true);
  // oneDNN's matmul primitive on dense tensors where the build has
  // oneDNN's headers (common/matmul.h), else LibTorch's mkldnn_linear.
  const std::string node =
      OneDnnMatmulAvailable() ? "LinearFunction" : "MkldnnLinearBackward";
  EXPECT_NE(GradPath(Linear(x, w)).find(node), std::string::npos)
      << GradPath(Linear(x, w));
  SetFastLinear(false);
  EXPECT_EQ(GradPath(Linear(x, w)).find("Mkldnn"), std::string::npos);
  SetFastLinear(true);
  // Doubles are not oneDNN's: the plain path, same values.
  const torch::Tensor xd = torch::randn({4, 8}, torch::kDouble);
  const torch::Tensor wd = torch::randn({6, 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(Linear(xd, wd), torch::linear(xd, wd, {})));
  // An empty batch.
  EXPECT_EQ(Linear(torch::zeros({0, 8}), w.detach()).sizes(),
            (std::vector<int64_t>{0, 6}));
}

}  // namespace
}  // namespace distill
