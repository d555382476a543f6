// Matmul computes what torch::matmul computes, values and gradients, on the
// layouts attention hands it, and takes the oneDNN path when the build has
// it.
#include "common/matmul.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <thread>
#include <vector>

#include "common/linear.h"

namespace distill {
namespace {

struct Result {
  torch::Tensor out, grad_a, grad_b;
};

// alpha * a @ b and its gradients under `upstream`, through Matmul or (as
// the reference) torch::matmul in double precision.
Result Apply(bool reference, const torch::Tensor& a0, const torch::Tensor& b0,
             double alpha, const torch::Tensor& upstream) {
  const auto dtype = reference ? torch::kDouble : torch::kFloat;
  torch::Tensor a = a0.to(dtype).detach().requires_grad_(true);
  torch::Tensor b = b0.to(dtype).detach().requires_grad_(true);
  torch::Tensor out =
      reference ? torch::matmul(a, b) * alpha : Matmul(a, b, alpha);
  out.backward(upstream.to(dtype));
  return {out.detach().to(torch::kFloat), a.grad().to(torch::kFloat),
          b.grad().to(torch::kFloat)};
}

void ExpectClose(const torch::Tensor& got, const torch::Tensor& want,
                 const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got - want).abs().max().item<double>();
  const double scale = want.abs().max().item<double>();
  EXPECT_LE(err, 1e-5 * scale + 1e-6) << what << ": max error " << err;
}

std::string GradName(const torch::Tensor& t) {
  return t.grad_fn() == nullptr ? "" : t.grad_fn()->name();
}

TEST(MatmulTest, AttentionLayoutsMatchTorchMatmul) {
  torch::manual_seed(3);
  const int64_t n = 3, s = 7, heads = 2, hd = 8, d = heads * hd;
  // q, k and v as attention takes them: strided views of one [N, S, 3D]
  // projection, heads split off and moved to dimension 1.
  const torch::Tensor qkv = torch::randn({n, s, 3 * d});
  auto head = [&](int i) {
    return qkv.narrow(-1, i * d, d).view({n, s, heads, hd}).transpose(1, 2);
  };
  const torch::Tensor q = head(0), k = head(1), v = head(2);
  ASSERT_FALSE(q.is_contiguous());
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  {
    SCOPED_TRACE("q @ k^T / sqrt(hd)");
    const torch::Tensor up = torch::randn({n, heads, s, s});
    const Result got = Apply(false, q, k.transpose(-2, -1), scale, up);
    const Result want = Apply(true, q, k.transpose(-2, -1), scale, up);
    ExpectClose(got.out, want.out, "values");
    ExpectClose(got.grad_a, want.grad_a, "grad q");
    ExpectClose(got.grad_b, want.grad_b, "grad k^T");
  }
  {
    SCOPED_TRACE("softmax(att) @ v");
    const torch::Tensor att =
        torch::softmax(torch::randn({n, heads, s, s}), -1);
    const torch::Tensor up = torch::randn({n, heads, s, hd});
    const Result got = Apply(false, att, v, 1.0, up);
    const Result want = Apply(true, att, v, 1.0, up);
    ExpectClose(got.out, want.out, "values");
    ExpectClose(got.grad_a, want.grad_a, "grad att");
    ExpectClose(got.grad_b, want.grad_b, "grad v");
  }
}

TEST(MatmulTest, PlainShapesAndBroadcastGradients) {
  torch::manual_seed(4);
  for (const std::vector<int64_t>& batch :
       {std::vector<int64_t>{}, std::vector<int64_t>{5}}) {
    std::vector<int64_t> a_shape = batch, b_shape = batch, out_shape = batch;
    a_shape.insert(a_shape.end(), {9, 6});
    b_shape.insert(b_shape.end(), {6, 4});
    out_shape.insert(out_shape.end(), {9, 4});
    const torch::Tensor a = torch::randn(a_shape), b = torch::randn(b_shape);
    // An upstream gradient with stride 0 everywhere, as out.sum() gives.
    const torch::Tensor up = torch::ones({1}).expand(out_shape);
    const Result got = Apply(false, a, b, 2.5, up);
    const Result want = Apply(true, a, b, 2.5, up);
    ExpectClose(got.out, want.out, "values");
    ExpectClose(got.grad_a, want.grad_a, "grad a");
    ExpectClose(got.grad_b, want.grad_b, "grad b");
  }
}

TEST(MatmulTest, FloatCpuTensorsTakeTheOneDnnPath) {
  if (!OneDnnMatmulAvailable()) GTEST_SKIP() << "built without oneDNN";
  const torch::Tensor a = torch::randn({2, 4, 8}).requires_grad_(true);
  const torch::Tensor b = torch::randn({2, 8, 3}).requires_grad_(true);
  EXPECT_NE(GradName(Matmul(a, b)).find("MatmulFunction"), std::string::npos)
      << GradName(Matmul(a, b));
  SetFastLinear(false);
  EXPECT_EQ(GradName(Matmul(a, b)).find("MatmulFunction"), std::string::npos);
  SetFastLinear(true);
  // Doubles, and batch dimensions that broadcast, are torch::matmul's.
  const torch::Tensor ad = torch::randn({2, 4, 8}, torch::kDouble);
  const torch::Tensor bd = torch::randn({2, 8, 3}, torch::kDouble);
  EXPECT_TRUE(torch::equal(Matmul(ad, bd), torch::matmul(ad, bd)));
  const torch::Tensor b1 = torch::randn({1, 8, 3}).requires_grad_(true);
  EXPECT_EQ(GradName(Matmul(a, b1)).find("MatmulFunction"), std::string::npos);
  ExpectClose(Matmul(a, b1).detach(), torch::matmul(a, b1).detach(),
              "broadcast");
}

TEST(MatmulTest, ThreadsMultiplyingAtOnceGetTheirOwnProducts) {
  torch::manual_seed(5);
  constexpr int kThreads = 4;
  std::vector<torch::Tensor> a(kThreads), b(kThreads), got(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    a[i] = torch::randn({4, 33 + i, 40});
    b[i] = torch::randn({4, 40, 29 + i});
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 20; ++rep) got[i] = Matmul(a[i], b[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    ExpectClose(got[i],
                torch::matmul(a[i].to(torch::kDouble), b[i].to(torch::kDouble))
                    .to(torch::kFloat),
                "thread's product");
  }
}

}  // namespace
}  // namespace distill
