// Numerics of the built-in losses: hand-computed values, the dense/top-k and
// [N, S, V]/[N*S, V] equivalences, extreme logits, finite differences, and
// a comparison with torch.nn.functional run by Python.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/testing/process.h"
#include "common/testing/status_matchers.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/teacher_targets.h"
#include "nlohmann/json.hpp"

namespace distill::losses {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const std::vector<std::string> kTeacherLosses = {"kd_kl", "reverse_kl", "js",
                                                 "soft_ce", "mse_logits"};
const std::vector<std::string> kTopKLosses = {"kd_kl", "reverse_kl", "js",
                                              "tvd", "soft_ce"};

absl::StatusOr<torch::Tensor> RunLoss(const std::string& name,
                                      const torch::Tensor& student,
                                      const TeacherTargets* teacher,
                                      const torch::Tensor& labels = {},
                                      const LossParams& params = {}) {
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<Loss> loss,
                           LossRegistry::Global().Create(name, params));
  LossInputs inputs;
  inputs.student_logits = student;
  inputs.teacher = teacher;
  inputs.labels = labels;
  return loss->Compute(inputs);
}

struct ValueAndGrad {
  double value = 0.0;
  torch::Tensor grad;
};

ValueAndGrad Evaluate(const std::string& name, const torch::Tensor& student,
                      const TeacherTargets* teacher,
                      const torch::Tensor& labels = {},
                      const LossParams& params = {}) {
  torch::Tensor x = student.detach().clone().requires_grad_(true);
  absl::StatusOr<torch::Tensor> loss =
      RunLoss(name, x, teacher, labels, params);
  EXPECT_THAT(loss, IsOk()) << name;
  if (!loss.ok()) return {};
  EXPECT_EQ(loss->dim(), 0) << name;
  loss->backward();
  return {loss->item<double>(), x.grad()};
}

torch::Tensor Randn(std::vector<int64_t> shape, double scale = 2.0) {
  return torch::randn(shape, torch::kDouble) * scale;
}

// log softmax(z / T) of one row, by the textbook formula.
std::vector<double> HandLogSoftmax(const std::vector<double>& z, double t) {
  const double max = *std::max_element(z.begin(), z.end());
  double sum = 0.0;
  for (double v : z) sum += std::exp((v - max) / t);
  std::vector<double> out;
  for (double v : z) out.push_back((v - max) / t - std::log(sum));
  return out;
}

std::vector<double> Row(const torch::Tensor& t, int64_t i) {
  torch::Tensor row = t[i].contiguous().to(torch::kDouble);
  return {row.data_ptr<double>(), row.data_ptr<double>() + row.numel()};
}

// Mean over rows of KL(softmax(t / T) || softmax(s / T)).
double HandKl(const torch::Tensor& s, const torch::Tensor& t, double temp) {
  double total = 0.0;
  for (int64_t i = 0; i < s.size(0); ++i) {
    const std::vector<double> log_q = HandLogSoftmax(Row(s, i), temp);
    const std::vector<double> log_p = HandLogSoftmax(Row(t, i), temp);
    for (size_t c = 0; c < log_p.size(); ++c) {
      total += std::exp(log_p[c]) * (log_p[c] - log_q[c]);
    }
  }
  return total / s.size(0);
}

TEST(KdKlTest, IdenticalDistributionsGiveZero) {
  torch::manual_seed(1);
  const torch::Tensor logits = Randn({4, 10});
  for (double temp : {1.0, 3.0}) {
    const TeacherTargets dense = TeacherTargets::DenseFromLogits(logits, temp);
    EXPECT_NEAR(Evaluate("kd_kl", logits, &dense).value, 0.0, 1e-12);
    const TeacherTargets dense32 =
        TeacherTargets::DenseFromLogits(logits.to(torch::kFloat), temp);
    EXPECT_NEAR(Evaluate("kd_kl", logits.to(torch::kFloat), &dense32).value,
                0.0, 1e-5);
  }
}

TEST(KdKlTest, DifferentDistributionsGivePositive) {
  torch::manual_seed(2);
  const TeacherTargets dense =
      TeacherTargets::DenseFromLogits(Randn({4, 10}), 2);
  EXPECT_GT(Evaluate("kd_kl", Randn({4, 10}), &dense).value, 1e-3);
}

TEST(KdKlTest, IsTSquaredTimesKl) {
  torch::manual_seed(3);
  const torch::Tensor s = Randn({5, 7});
  const torch::Tensor t = Randn({5, 7});
  for (double temp : {1.0, 2.0, 4.0}) {
    const TeacherTargets dense = TeacherTargets::DenseFromLogits(t, temp);
    const double expected = temp * temp * HandKl(s, t, temp);
    EXPECT_NEAR(Evaluate("kd_kl", s, &dense).value, expected,
                1e-12 * std::abs(expected))
        << "T = " << temp;
  }
}

TEST(KdKlTest, TopKTailBucketMatchesHandFormula) {
  torch::manual_seed(4);
  const torch::Tensor s = Randn({3, 6});
  const torch::Tensor t = Randn({3, 6});
  const double temp = 2.0;
  const int64_t k = 2;
  const TeacherTargets top = TeacherTargets::TopKFromLogits(t, temp, k);
  double expected = 0.0;
  for (int64_t i = 0; i < 3; ++i) {
    const std::vector<double> log_q = HandLogSoftmax(Row(s, i), temp);
    const std::vector<double> log_p = HandLogSoftmax(Row(t, i), temp);
    std::vector<int64_t> order(6);
    for (int64_t c = 0; c < 6; ++c) order[c] = c;
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return log_p[a] > log_p[b]; });
    double p_tail = 1.0, q_tail = 1.0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = order[j];
      expected += std::exp(log_p[c]) * (log_p[c] - log_q[c]);
      p_tail -= std::exp(log_p[c]);
      q_tail -= std::exp(log_q[c]);
    }
    expected += p_tail * (std::log(p_tail) - std::log(q_tail));
  }
  expected = temp * temp * expected / 3;
  EXPECT_NEAR(Evaluate("kd_kl", s, &top).value, expected, 1e-10);
}

// Random-sampling KD's claim, checked: the mean over many draws of the
// sampled loss's gradient is the dense gradient T (q - p) / N (by hand,
// from softmax), and top-k's is not. Each of R = 20,000 draws is one copy
// of the batch, so one backward over the copies gives the mean gradient;
// its standard error per class is T / N * sqrt(p (1 - p) / (m R)), and the
// stated tolerance is 6 of them.
TEST(BuiltinLossesTest, SampledGradientIsUnbiasedAndTopKIsNot) {
  torch::manual_seed(21);
  constexpr int64_t kN = 4, kC = 10, kDraws = 12, kCopies = 20000;
  const double temp = 2.0;
  const torch::Tensor s = Randn({kN, kC});
  const torch::Tensor t = Randn({kN, kC});
  const torch::Tensor q = torch::softmax(s / temp, -1);
  const torch::Tensor p = torch::softmax(t / temp, -1);
  const torch::Tensor want = temp * (q - p) / kN;
  const torch::Tensor tolerance =
      6 * temp / kN * (p * (1 - p) / (kDraws * kCopies)).sqrt();
  auto mean_grad = [&](const std::string& name, const TeacherTargets& targets) {
    const ValueAndGrad g = Evaluate(name, s.repeat({kCopies, 1}), &targets);
    return g.grad.reshape({kCopies, kN, kC}).sum(0);
  };
  const TeacherTargets sampled =
      TeacherTargets::SampledFromLogits(t.repeat({kCopies, 1}), temp, kDraws);
  for (const std::string& name : {"kd_kl", "soft_ce"}) {
    const torch::Tensor error = (mean_grad(name, sampled) - want).abs();
    EXPECT_TRUE((error <= tolerance).all().item<bool>())
        << name << ": largest error " << error.max().item<double>()
        << " where the tolerance is " << tolerance.max().item<double>();
  }
  // Top-3 with its exact tail bucket is deterministic and still off: it
  // spreads the tail's mass over the unlisted classes as the student does.
  const TeacherTargets top =
      TeacherTargets::TopKFromLogits(t.repeat({kCopies, 1}), temp, 3);
  const torch::Tensor top_error = (mean_grad("kd_kl", top) - want).abs();
  EXPECT_GT((top_error / tolerance).max().item<double>(), 10);
  // Losses not linear in p would be biased by sampled targets: refused.
  const TeacherTargets few = TeacherTargets::SampledFromLogits(t, temp, 4);
  for (const std::string& name : {"reverse_kl", "js", "tvd", "mse_logits"}) {
    EXPECT_THAT(
        RunLoss(name, s, &few),
        StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(name)))
        << name;
  }
}

TEST(BuiltinLossesTest, TopKWithAllClassesEqualsDense) {
  torch::manual_seed(5);
  const torch::Tensor s = Randn({4, 9});
  const torch::Tensor t = Randn({4, 9});
  const TeacherTargets dense = TeacherTargets::DenseFromLogits(t, 2.5);
  const TeacherTargets top = TeacherTargets::TopKFromLogits(t, 2.5, 9);
  for (const std::string& name : kTopKLosses) {
    const ValueAndGrad d = Evaluate(name, s, &dense);
    const ValueAndGrad k = Evaluate(name, s, &top);
    EXPECT_NEAR(k.value, d.value, 1e-12) << name;
    EXPECT_TRUE(torch::allclose(k.grad, d.grad, 1e-10, 1e-12)) << name;
  }
}

TEST(BuiltinLossesTest, SequenceEqualsFlattened) {
  torch::manual_seed(6);
  const torch::Tensor s = Randn({2, 3, 7});
  const torch::Tensor t = Randn({2, 3, 7});
  const torch::Tensor labels = torch::randint(0, 7, {2, 3}, torch::kLong);
  const std::vector<TeacherTargets> seq = {
      TeacherTargets::DenseFromLogits(t, 2.0),
      TeacherTargets::TopKFromLogits(t, 2.0, 3)};
  const std::vector<TeacherTargets> flat = {
      TeacherTargets::DenseFromLogits(t.reshape({6, 7}), 2.0),
      TeacherTargets::TopKFromLogits(t.reshape({6, 7}), 2.0, 3)};
  for (size_t form = 0; form < seq.size(); ++form) {
    for (const std::string& name : kTeacherLosses) {
      if (form == 1 && name == "mse_logits") continue;
      const ValueAndGrad a = Evaluate(name, s, &seq[form]);
      const ValueAndGrad b = Evaluate(name, s.reshape({6, 7}), &flat[form]);
      EXPECT_NEAR(a.value, b.value, 1e-12) << name << " form " << form;
      EXPECT_TRUE(torch::allclose(a.grad.reshape({6, 7}), b.grad, 1e-10, 1e-12))
          << name << " form " << form;
    }
  }
  const LossParams smoothing = {{"label_smoothing", 0.2}};
  EXPECT_NEAR(Evaluate("hard_ce", s, nullptr, labels, smoothing).value,
              Evaluate("hard_ce", s.reshape({6, 7}), nullptr,
                       labels.reshape({6}), smoothing)
                  .value,
              1e-12);
}

TEST(BuiltinLossesTest, ExtremeLogitsStayFinite) {
  torch::manual_seed(7);
  auto extreme = [] {
    return (torch::randint(0, 2, {4, 8}).to(torch::kFloat) * 2 - 1) * 1e4;
  };
  const torch::Tensor s = extreme();
  const torch::Tensor t = extreme();
  const torch::Tensor labels = torch::randint(0, 8, {4}, torch::kLong);
  for (double temp : {1.0, 4.0}) {
    const std::vector<TeacherTargets> targets = {
        TeacherTargets::DenseFromLogits(t, temp),
        TeacherTargets::TopKFromLogits(t, temp, 3),
        TeacherTargets::TopKFromLogits(t, temp, 8)};
    for (size_t form = 0; form < targets.size(); ++form) {
      for (const std::string& name : kTeacherLosses) {
        if (form > 0 && name == "mse_logits") continue;
        for (const torch::Tensor& student : {s, t}) {
          const ValueAndGrad r = Evaluate(name, student, &targets[form]);
          EXPECT_TRUE(std::isfinite(r.value))
              << name << " form " << form << " T " << temp;
          ASSERT_TRUE(r.grad.defined()) << name;
          EXPECT_TRUE(torch::isfinite(r.grad).all().item<bool>())
              << name << " form " << form << " T " << temp;
        }
      }
    }
  }
  const ValueAndGrad ce =
      Evaluate("hard_ce", s, nullptr, labels, {{"label_smoothing", 0.1}});
  EXPECT_TRUE(std::isfinite(ce.value));
  EXPECT_TRUE(torch::isfinite(ce.grad).all().item<bool>());
}

// Central differences of the loss value, one student logit at a time.
torch::Tensor NumericGrad(const std::string& name, const torch::Tensor& s,
                          const TeacherTargets* teacher,
                          const torch::Tensor& labels,
                          const LossParams& params) {
  const double h = 1e-6;
  torch::Tensor grad = torch::zeros_like(s);
  torch::Tensor flat = s.clone().reshape({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double x = flat[i].item<double>();
    flat[i] = x + h;
    const double up =
        RunLoss(name, flat.view(s.sizes()), teacher, labels, params)
            ->item<double>();
    flat[i] = x - h;
    const double down =
        RunLoss(name, flat.view(s.sizes()), teacher, labels, params)
            ->item<double>();
    flat[i] = x;
    grad.view({-1})[i] = (up - down) / (2 * h);
  }
  return grad;
}

TEST(BuiltinLossesTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(8);
  const torch::Tensor s = Randn({3, 5});
  const torch::Tensor t = Randn({3, 5});
  const torch::Tensor labels = torch::tensor({0, 4, 2}, torch::kLong);
  const std::vector<TeacherTargets> targets = {
      TeacherTargets::DenseFromLogits(t, 2.0),
      TeacherTargets::TopKFromLogits(t, 2.0, 2)};
  auto check = [&](const std::string& name, const TeacherTargets* teacher,
                   const LossParams& params) {
    const ValueAndGrad r = Evaluate(name, s, teacher, labels, params);
    const torch::Tensor numeric = NumericGrad(name, s, teacher, labels, params);
    EXPECT_TRUE(torch::allclose(r.grad, numeric, 1e-4, 1e-8))
        << name << "\nautograd:\n"
        << r.grad << "\nnumeric:\n"
        << numeric;
  };
  for (size_t form = 0; form < targets.size(); ++form) {
    for (const std::string& name : kTeacherLosses) {
      if (form == 1 && name == "mse_logits") continue;
      SCOPED_TRACE(absl::StrCat(name, " form ", form));
      check(name, &targets[form], {});
    }
  }
  check("hard_ce", nullptr, {});
  check("hard_ce", nullptr, {{"label_smoothing", 0.3}});
}

// kd_kl's dense gradient is written out by hand: it must hold for rows that
// are not quite distributions (fp16 targets off the wire scale a row's sum)
// and give ignored positions nothing.
TEST(KdKlTest, GradientOfUnnormalizedRowsMatchesFiniteDifferences) {
  torch::manual_seed(9);
  const torch::Tensor s = Randn({4, 6});
  for (const double temp : {1.0, 2.5}) {
    TeacherTargets teacher =
        TeacherTargets::DenseFromLogits(Randn({4, 6}), temp);
    teacher.probs =
        teacher.probs *
        torch::tensor({1.0, 0.97, 1.03, 0.5}, torch::kDouble).reshape({4, 1});
    const torch::Tensor labels = torch::tensor({0, -100, 2, 5}, torch::kLong);
    const ValueAndGrad r = Evaluate("kd_kl", s, &teacher, labels);
    const torch::Tensor numeric = NumericGrad("kd_kl", s, &teacher, labels, {});
    EXPECT_TRUE(torch::allclose(r.grad, numeric, 1e-4, 1e-8))
        << "T " << temp << "\nhand-written:\n"
        << r.grad << "\nnumeric:\n"
        << numeric;
    EXPECT_TRUE(torch::equal(r.grad[1], torch::zeros({6}, torch::kDouble)));
  }
}

TEST(HardCeTest, LabelSmoothingMatchesHandValue) {
  const torch::Tensor s =
      torch::tensor({{1.0, 2.0, 0.5}, {-1.0, 0.0, 3.0}}, torch::kDouble);
  const torch::Tensor labels = torch::tensor({1, 0}, torch::kLong);
  const double e = 0.25;
  double expected = 0.0;
  for (int64_t i = 0; i < 2; ++i) {
    const std::vector<double> log_q = HandLogSoftmax(Row(s, i), 1.0);
    const double mean_nll = -(log_q[0] + log_q[1] + log_q[2]) / 3;
    expected += (1 - e) * -log_q[labels[i].item<int64_t>()] + e * mean_nll;
  }
  expected /= 2;
  EXPECT_NEAR(
      Evaluate("hard_ce", s, nullptr, labels, {{"label_smoothing", e}}).value,
      expected, 1e-12);
  EXPECT_NEAR(
      Evaluate("hard_ce", s, nullptr, labels).value,
      -(HandLogSoftmax(Row(s, 0), 1)[1] + HandLogSoftmax(Row(s, 1), 1)[0]) / 2,
      1e-12);
}

// Dense one-row targets p at temperature T, and student logits whose
// softmax at T is q.
TeacherTargets DenseRow(const std::vector<double>& p, double t) {
  TeacherTargets targets;
  targets.form = TeacherTargets::Form::kDense;
  targets.temperature = t;
  targets.num_classes = static_cast<int64_t>(p.size());
  targets.probs = torch::tensor(p).reshape({1, -1});
  return targets;
}

torch::Tensor LogitsFor(const std::vector<double>& q, double t) {
  return (t * torch::log(torch::tensor(q))).reshape({1, -1});
}

TEST(TvdTest, HalfTheL1DistanceTimesTSquared) {
  const TeacherTargets teacher = DenseRow({0.7, 0.2, 0.1}, 2.0);
  auto value = RunLoss("tvd", LogitsFor({0.5, 0.3, 0.2}, 2.0), &teacher);
  ASSERT_THAT(value, IsOk());
  // (|0.7 - 0.5| + |0.2 - 0.3| + |0.1 - 0.2|) / 2 = 0.2, times T^2 = 4.
  EXPECT_NEAR(value->item<double>(), 0.8, 1e-6);
}

// p = (0.7, 0.2, 0.1), q = (0.5, 0.3, 0.2), beta = 0.25, T = 2:
//   m = 0.25 p + 0.75 q = (0.55, 0.275, 0.175)
//   T^2 (0.25 sum p ln(p / m) + 0.75 sum q ln(q / m))
TEST(GeneralizedJsdTest, MatchesTheHandFormula) {
  const double kl_p = 0.7 * std::log(0.7 / 0.55) + 0.2 * std::log(0.2 / 0.275) +
                      0.1 * std::log(0.1 / 0.175);
  const double kl_q = 0.5 * std::log(0.5 / 0.55) + 0.3 * std::log(0.3 / 0.275) +
                      0.2 * std::log(0.2 / 0.175);
  const TeacherTargets teacher = DenseRow({0.7, 0.2, 0.1}, 2.0);
  auto value = RunLoss("generalized_jsd", LogitsFor({0.5, 0.3, 0.2}, 2.0),
                       &teacher, {}, {{"beta", 0.25}});
  ASSERT_THAT(value, IsOk());
  EXPECT_NEAR(value->item<double>(), 4 * (0.25 * kl_p + 0.75 * kl_q), 1e-6);
}

// beta = 0 and 1 are forward and reverse KL, and 0.5 the Jensen-Shannon
// divergence, values and gradients, on dense, top-k and [N, S, V] targets.
TEST(GeneralizedJsdTest, EndsAreForwardAndReverseKlAndMiddleIsJs) {
  torch::manual_seed(21);
  const torch::Tensor s = Randn({2, 5, 9});
  const torch::Tensor t = Randn({2, 5, 9});
  const TeacherTargets dense = TeacherTargets::DenseFromLogits(t, 2.0);
  const TeacherTargets top = TeacherTargets::TopKFromLogits(t, 2.0, 3);
  for (const TeacherTargets* teacher : {&dense, &top}) {
    for (const auto& [beta, name] : std::vector<std::pair<double, std::string>>{
             {0.0, "kd_kl"}, {1.0, "reverse_kl"}, {0.5, "js"}}) {
      const ValueAndGrad jsd =
          Evaluate("generalized_jsd", s, teacher, {}, {{"beta", beta}});
      const ValueAndGrad reference = Evaluate(name, s, teacher);
      EXPECT_NEAR(jsd.value, reference.value, 1e-12) << name;
      EXPECT_TRUE(torch::allclose(jsd.grad, reference.grad, 1e-9, 1e-12))
          << name;
    }
  }
}

// Targets at ids the student chose (its own top 2 per row, as on-policy
// steps with student_top_k ask the teacher): reverse KL (beta 1) over those
// buckets and the tail, by hand.
TEST(GeneralizedJsdTest, StudentChosenIdsMatchTheHandFormula) {
  torch::manual_seed(8);
  const torch::Tensor s = Randn({3, 6});
  const torch::Tensor t = Randn({3, 6});
  const double temp = 2.0;
  const torch::Tensor ids = std::get<1>(s.topk(2, -1));
  const TeacherTargets at_ids = TeacherTargets::AtIndices(t, temp, ids);
  double expected = 0.0;
  for (int64_t i = 0; i < 3; ++i) {
    const std::vector<double> log_q = HandLogSoftmax(Row(s, i), temp);
    const std::vector<double> log_p = HandLogSoftmax(Row(t, i), temp);
    double p_tail = 1.0, q_tail = 1.0;
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t c = ids[i][j].item<int64_t>();
      expected += std::exp(log_q[c]) * (log_q[c] - log_p[c]);
      p_tail -= std::exp(log_p[c]);
      q_tail -= std::exp(log_q[c]);
    }
    expected += q_tail * (std::log(q_tail) - std::log(p_tail));
  }
  expected = temp * temp * expected / 3;
  EXPECT_NEAR(
      Evaluate("generalized_jsd", s, &at_ids, {}, {{"beta", 1.0}}).value,
      expected, 1e-6);
}

TEST(GeneralizedJsdTest, MovesFromForwardToReverseKlWithBeta) {
  torch::manual_seed(22);
  const torch::Tensor s = Randn({6, 9});
  const TeacherTargets dense =
      TeacherTargets::DenseFromLogits(Randn({6, 9}), 1.0);
  // Every interior beta is a proper divergence: positive, and zero only
  // when the distributions agree.
  for (double beta : {0.1, 0.5, 0.9}) {
    EXPECT_GT(
        Evaluate("generalized_jsd", s, &dense, {}, {{"beta", beta}}).value,
        1e-3);
    const TeacherTargets same = TeacherTargets::DenseFromLogits(s, 1.0);
    EXPECT_NEAR(
        Evaluate("generalized_jsd", s, &same, {}, {{"beta", beta}}).value, 0,
        1e-12);
  }
}

TEST(GeneralizedJsdTest, RefusesSampledTargetsUnlessBetaIsZero) {
  torch::manual_seed(23);
  const torch::Tensor t = Randn({4, 9});
  const TeacherTargets sampled = TeacherTargets::SampledFromLogits(t, 1.0, 16);
  EXPECT_THAT(
      RunLoss("generalized_jsd", Randn({4, 9}), &sampled, {}, {{"beta", 0.5}}),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sampled")));
  EXPECT_THAT(
      RunLoss("generalized_jsd", Randn({4, 9}), &sampled, {}, {{"beta", 0.0}}),
      IsOk());
  EXPECT_THAT(
      RunLoss("generalized_jsd", Randn({4, 9}), &sampled, {}, {{"beta", 1.5}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("beta")));
}

// p = (0.7, 0.2, 0.1), q = (0.5, 0.3, 0.2), label 0:
//   TCKD = 0.7 ln(0.7 / 0.5) + 0.3 ln(0.3 / 0.5)
//   NCKD = KL((2/3, 1/3) || (0.6, 0.4))
TEST(DkdTest, MatchesHandDerivedTermsAtTemperature) {
  const double tckd = 0.7 * std::log(0.7 / 0.5) + 0.3 * std::log(0.3 / 0.5);
  const double nckd = (2.0 / 3) * std::log((2.0 / 3) / 0.6) +
                      (1.0 / 3) * std::log((1.0 / 3) / 0.4);
  const TeacherTargets teacher = DenseRow({0.7, 0.2, 0.1}, 2.0);
  const torch::Tensor logits = LogitsFor({0.5, 0.3, 0.2}, 2.0);
  const torch::Tensor labels = torch::tensor({0}, torch::kLong);
  auto value =
      RunLoss("dkd", logits, &teacher, labels, {{"alpha", 1.5}, {"beta", 8.0}});
  ASSERT_THAT(value, IsOk());
  EXPECT_NEAR(value->item<double>(), 4.0 * (1.5 * tckd + 8.0 * nckd), 1e-5);
  // Each term alone.
  auto only_t =
      RunLoss("dkd", logits, &teacher, labels, {{"alpha", 1.0}, {"beta", 0.0}});
  ASSERT_THAT(only_t, IsOk());
  EXPECT_NEAR(only_t->item<double>(), 4.0 * tckd, 1e-6);
  auto only_n =
      RunLoss("dkd", logits, &teacher, labels, {{"alpha", 0.0}, {"beta", 1.0}});
  ASSERT_THAT(only_n, IsOk());
  EXPECT_NEAR(only_n->item<double>(), 4.0 * nckd, 1e-6);
  // The label picks the target class: with label 1 the terms differ.
  auto other =
      RunLoss("dkd", logits, &teacher, torch::tensor({1}, torch::kLong),
              {{"alpha", 1.0}, {"beta", 0.0}});
  ASSERT_THAT(other, IsOk());
  EXPECT_NEAR(other->item<double>(),
              4.0 * (0.2 * std::log(0.2 / 0.3) + 0.8 * std::log(0.8 / 0.7)),
              1e-6);
}

// KL(p || q) = TCKD + (1 - p_y) NCKD: dkd with alpha = 1, beta = 1 - p_y is
// kd_kl, on random rows of [N, S, V] logits with a common p_y.
TEST(DkdTest, ReducesToKdKlWithBetaOneMinusTargetProbability) {
  torch::manual_seed(3);
  const torch::Tensor logits = torch::randn({2, 3, 5}, torch::kDouble);
  // Teacher rows with p_y = 0.6 on label y and the rest random.
  const torch::Tensor labels = torch::tensor({{0, 3, 4}, {1, 1, 2}});
  torch::Tensor rest = torch::rand({2, 3, 5}, torch::kDouble) + 0.1;
  rest = rest.scatter(-1, labels.unsqueeze(-1), 0.0);
  rest = 0.4 * rest / rest.sum(-1, true);
  const torch::Tensor p = rest.scatter(-1, labels.unsqueeze(-1), 0.6);
  TeacherTargets teacher;
  teacher.temperature = 3.0;
  teacher.num_classes = 5;
  teacher.probs = p;
  auto dkd =
      RunLoss("dkd", logits, &teacher, labels, {{"alpha", 1.0}, {"beta", 0.4}});
  auto kl = RunLoss("kd_kl", logits, &teacher);
  ASSERT_THAT(dkd, IsOk());
  ASSERT_THAT(kl, IsOk());
  EXPECT_NEAR(dkd->item<double>(), kl->item<double>(), 1e-10);
}

TEST(DkdTest, OneHotTeacherAndExtremeLogitsStayFinite) {
  const TeacherTargets teacher = DenseRow({1.0, 0.0, 0.0}, 1.0);
  const torch::Tensor logits =
      torch::tensor({{-1e4, 1e4, 0.0}}).requires_grad_(true);
  auto value =
      RunLoss("dkd", logits, &teacher, torch::tensor({0}, torch::kLong));
  ASSERT_THAT(value, IsOk());
  EXPECT_TRUE(std::isfinite(value->item<double>()));
  value->backward();
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
}

TEST(DkdTest, RefusesTopKAndMissingLabels) {
  const torch::Tensor logits = LogitsFor({0.5, 0.3, 0.2}, 1.0);
  const TeacherTargets top_k =
      TeacherTargets::TopKFromLogits(torch::tensor({{1.0, 0.0, -1.0}}), 1.0, 2);
  EXPECT_THAT(
      RunLoss("dkd", logits, &top_k, torch::tensor({0}, torch::kLong)),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("dkd needs dense teacher targets, got top-k")));
  const TeacherTargets dense = DenseRow({0.7, 0.2, 0.1}, 1.0);
  EXPECT_THAT(RunLoss("dkd", logits, &dense),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dkd needs labels but none were given")));
}

TEST(BuiltinLossesTest, MissingTeacherIsFailedPrecondition) {
  const torch::Tensor s = Randn({2, 4});
  for (const std::string& name : kTeacherLosses) {
    EXPECT_THAT(RunLoss(name, s, nullptr),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr(name + " needs teacher targets")));
  }
}

TEST(BuiltinLossesTest, MseLogitsRefusesTopK) {
  const torch::Tensor s = Randn({2, 4});
  const TeacherTargets top = TeacherTargets::TopKFromLogits(s, 1.0, 2);
  EXPECT_THAT(RunLoss("mse_logits", s, &top),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("mse_logits needs dense teacher targets")));
}

TEST(BuiltinLossesTest, ShapeMismatchesAreInvalidArgument) {
  const torch::Tensor s = Randn({4, 10});
  const TeacherTargets three_rows =
      TeacherTargets::DenseFromLogits(Randn({3, 10}), 2.0);
  EXPECT_THAT(
      RunLoss("kd_kl", s, &three_rows),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::AllOf(HasSubstr("[3]"), HasSubstr("[4, 10]"))));
  const TeacherTargets eight_classes =
      TeacherTargets::TopKFromLogits(Randn({4, 8}), 2.0, 3);
  EXPECT_THAT(
      RunLoss("js", s, &eight_classes),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::AllOf(HasSubstr("8 classes"), HasSubstr("[4, 10]"))));
  EXPECT_THAT(
      RunLoss("hard_ce", s, nullptr, torch::zeros({4, 2}, torch::kLong)),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          ::testing::AllOf(HasSubstr("labels [4, 2]"), HasSubstr("[4, 10]"))));
  EXPECT_THAT(
      RunLoss("hard_ce", s, nullptr, torch::full({4}, 10, torch::kLong)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("10 classes")));
  EXPECT_THAT(RunLoss("hard_ce", s, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("hard_ce needs labels")));
  EXPECT_THAT(RunLoss("soft_ce", Randn({10}), &three_rows),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("[N, C] or [N, S, V]")));
  TeacherTargets cold = TeacherTargets::DenseFromLogits(s, 1.0);
  cold.temperature = 0.0;
  EXPECT_THAT(
      RunLoss("kd_kl", s, &cold),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("temperature")));
}

torch::Tensor FromJson(const nlohmann::json& rows) {
  std::vector<double> data;
  int64_t cols = 0;
  for (const auto& row : rows) {
    cols = static_cast<int64_t>(row.size());
    for (const auto& v : row) data.push_back(v.get<double>());
  }
  return torch::tensor(data, torch::kDouble)
      .reshape({static_cast<int64_t>(rows.size()), cols});
}

TEST(BuiltinLossesTest, MatchesTorchFunctional) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  }
  const std::filesystem::path script =
      std::filesystem::path(::distill::testing::SourceDir()) / "losses" /
      "testdata" / "torch_reference.py";
  const std::filesystem::path out =
      std::filesystem::path(::testing::TempDir()) /
      "losses_torch_reference.json";
  const std::string command =
      absl::StrCat("/usr/bin/python3 ", script.string(), " ", out.string());
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(out);
  ASSERT_TRUE(in.good()) << out;
  const nlohmann::json ref = nlohmann::json::parse(in);

  const double temp = ref["temperature"].get<double>();
  const torch::Tensor s = FromJson(ref["student"]);
  const TeacherTargets teacher =
      TeacherTargets::DenseFromLogits(FromJson(ref["teacher"]), temp);
  const torch::Tensor labels =
      torch::tensor(ref["labels"].get<std::vector<int64_t>>(), torch::kLong);
  const std::vector<std::string> names = {"kd_kl", "soft_ce", "reverse_kl",
                                          "js",    "hard_ce", "mse_logits"};
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(ref["losses"].contains(name));
    LossParams params;
    if (name == "hard_ce") {
      params["label_smoothing"] = ref["label_smoothing"].get<double>();
    }
    const ValueAndGrad r = Evaluate(name, s, &teacher, labels, params);
    const double expected = ref["losses"][name]["value"].get<double>();
    EXPECT_NEAR(r.value, expected, 1e-6 * std::abs(expected));
    const torch::Tensor grad = FromJson(ref["losses"][name]["grad"]);
    EXPECT_TRUE(torch::allclose(r.grad, grad, 1e-6, 1e-12))
        << "ours:\n"
        << r.grad << "\ntorch:\n"
        << grad;
  }
}

}  // namespace
}  // namespace distill::losses
