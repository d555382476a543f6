#include "teacher_server/codec.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace distill::teacher {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

TEST(TensorCodecTest, Float32BytesAreLittleEndianIeee) {
  v1::Tensor message =
      ToProto(torch::tensor({1.0f, -2.0f}), v1::Tensor::FLOAT32);
  ASSERT_EQ(message.shape_size(), 1);
  EXPECT_EQ(message.shape(0), 2);
  // 1.0f = 0x3f800000, -2.0f = 0xc0000000, least significant byte first.
  EXPECT_EQ(message.data(), std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
}

TEST(TensorCodecTest, Float16ConversionOnTheWire) {
  v1::Tensor message =
      ToProto(torch::tensor({0.5f, 1.0f}), v1::Tensor::FLOAT16);
  // 0.5 = 0x3800, 1.0 = 0x3c00 in IEEE half precision.
  EXPECT_EQ(message.data(), std::string("\x00\x38\x00\x3c", 4));
  auto back = FromProto(message, "x");
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->scalar_type(), torch::kHalf);
  EXPECT_EQ(back->to(torch::kFloat)[0].item<float>(), 0.5f);
}

TEST(TensorCodecTest, RoundTripsEveryDtypeAndShape) {
  for (torch::Dtype dtype :
       {torch::kFloat, torch::kHalf, torch::kInt, torch::kLong, torch::kByte}) {
    torch::Tensor t = torch::arange(24).reshape({2, 3, 4}).to(dtype);
    auto message = ToProto(t);
    ASSERT_THAT(message.status(), IsOk());
    auto back = FromProto(*message, "t");
    ASSERT_THAT(back.status(), IsOk());
    EXPECT_EQ(back->scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(*back, t)) << c10::toString(dtype);
  }
  // A non-contiguous view goes out in its logical order.
  torch::Tensor t = torch::arange(6, torch::kFloat).reshape({2, 3}).t();
  auto back = FromProto(ToProto(t, v1::Tensor::FLOAT32), "t");
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_TRUE(torch::equal(*back, t));
}

TEST(TensorCodecTest, RefusesInconsistentMessages) {
  v1::Tensor message;
  message.set_dtype(v1::Tensor::FLOAT32);
  message.add_shape(2);
  message.add_shape(3);
  message.set_data(std::string(20, '\0'));
  EXPECT_THAT(FromProto(message, "inputs").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "inputs carries 20 bytes but FLOAT32 [2, 3] needs 24"));
  message.set_shape(1, -3);
  EXPECT_THAT(FromProto(message, "inputs").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("negative dimension")));
  message.set_shape(1, int64_t{1} << 62);
  EXPECT_THAT(
      FromProto(message, "inputs").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
  // One float with 100,000 dimensions of 1: the rank is refused and the
  // message stays short however many dimensions come.
  v1::Tensor deep;
  deep.set_dtype(v1::Tensor::FLOAT32);
  for (int i = 0; i < 100000; ++i) deep.add_shape(1);
  deep.set_data(std::string(4, '\0'));
  EXPECT_THAT(FromProto(deep, "probs").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "probs shape [1, 1, 1, 1, 1, 1, 1, 1, ... (100000 "
                       "dimensions)] has more than 8 dimensions"));
  deep.mutable_shape()->Truncate(9);
  EXPECT_THAT(FromProto(deep, "probs").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(9 dimensions)] has more than 8")));
  deep.mutable_shape()->Truncate(8);
  EXPECT_TRUE(FromProto(deep, "probs").ok());
  message.set_dtype(v1::Tensor::DTYPE_UNSPECIFIED);
  EXPECT_THAT(FromProto(message, "inputs").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "inputs: unsupported tensor dtype DTYPE_UNSPECIFIED"));
  EXPECT_THAT(ToProto(torch::zeros({1}, torch::kDouble)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no wire encoding")));
}

// Logits [0, ln 2, ln 4] at T = 1 give probabilities [1/7, 2/7, 4/7].
torch::Tensor SeventhsLogits() {
  return torch::tensor({{0.0, std::log(2.0), std::log(4.0)}}, torch::kFloat);
}

TEST(TargetsCodecTest, DenseRoundTripAtBothPrecisions) {
  auto dense = losses::TeacherTargets::DenseFromLogits(SeventhsLogits(), 1.0);
  for (v1::Encoding encoding : {v1::DENSE_FP32, v1::DENSE_FP16}) {
    auto message = EncodeTargets(dense, encoding);
    ASSERT_THAT(message.status(), IsOk());
    EXPECT_EQ(message->probs().data().size(),
              encoding == v1::DENSE_FP32 ? 12u : 6u);
    auto back = DecodeTargets(*message, /*expected_rows=*/1);
    ASSERT_THAT(back.status(), IsOk());
    EXPECT_EQ(back->form, losses::TeacherTargets::Form::kDense);
    EXPECT_EQ(back->num_classes, 3);
    EXPECT_EQ(back->temperature, 1.0);
    EXPECT_EQ(back->probs.scalar_type(), torch::kFloat);
    const double tol = encoding == v1::DENSE_FP32 ? 1e-7 : 1e-3;
    EXPECT_NEAR(back->probs[0][0].item<double>(), 1.0 / 7, tol);
    EXPECT_NEAR(back->probs[0][1].item<double>(), 2.0 / 7, tol);
    EXPECT_NEAR(back->probs[0][2].item<double>(), 4.0 / 7, tol);
  }
}

TEST(TargetsCodecTest, TopKRoundTripKeepsIndicesAndTail) {
  auto topk = losses::TeacherTargets::TopKFromLogits(SeventhsLogits(), 1.0, 2);
  auto message = EncodeTargets(topk, v1::TOP_K);
  ASSERT_THAT(message.status(), IsOk());
  auto back = DecodeTargets(*message, 1);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->form, losses::TeacherTargets::Form::kTopK);
  EXPECT_EQ(back->indices[0][0].item<int64_t>(), 2);
  EXPECT_EQ(back->indices[0][1].item<int64_t>(), 1);
  EXPECT_EQ(back->indices.scalar_type(), torch::kLong);
  EXPECT_NEAR(back->values[0][0].item<double>(), 4.0 / 7, 1e-3);
  EXPECT_NEAR(back->values[0][1].item<double>(), 2.0 / 7, 1e-3);
  // The tail travels in float32, computed before the values were rounded.
  EXPECT_NEAR(back->tail_mass[0].item<double>(), 1.0 / 7, 1e-6);
}

// KL(p || decoded), summed over a row, averaged over rows.
double MeanKl(const torch::Tensor& p, const torch::Tensor& q) {
  const torch::Tensor pd = p.to(torch::kDouble), qd = q.to(torch::kDouble);
  return torch::where(pd > 0, pd * (pd.log() - qd.log()), torch::zeros_like(pd))
      .sum(-1)
      .mean()
      .item<double>();
}

// At V = 32,000 most probabilities are below fp16's smallest normal number
// (6.1e-5): DENSE_FP16 rounds them to a few subnormal steps and loses
// ~3e-3 nats, DENSE_LOGP_FP16 keeps each within |log p| / 2048 and stays
// under the 1e-4 the vocabulary-scale goal asks of a dense encoding.
TEST(TargetsCodecTest, LogProbabilitiesInFp16KeepALargeVocabulary) {
  torch::manual_seed(11);
  const torch::Tensor logits = 3 * torch::randn({2, 4, 32000});
  auto dense = losses::TeacherTargets::DenseFromLogits(logits, 1.0);
  auto logp = DecodeTargets(*EncodeTargets(dense, v1::DENSE_LOGP_FP16), 2);
  ASSERT_THAT(logp.status(), IsOk());
  EXPECT_EQ(logp->form, losses::TeacherTargets::Form::kDense);
  EXPECT_EQ(logp->probs.sizes(), torch::IntArrayRef({2, 4, 32000}));
  EXPECT_TRUE(
      torch::allclose(logp->probs.sum(-1), torch::ones({2, 4}), 0, 1e-5));
  auto half = DecodeTargets(*EncodeTargets(dense, v1::DENSE_FP16), 2);
  ASSERT_THAT(half.status(), IsOk());
  const double logp_kl = MeanKl(dense.probs, logp->probs);
  const double half_kl = MeanKl(dense.probs, half->probs);
  EXPECT_LT(logp_kl, 1e-4);
  EXPECT_GT(half_kl, 1e-3);
  // Each probability within its logarithm's fp16 rounding (2^-11 relative
  // to |log p|, plus the row's renormalization).
  const torch::Tensor bound = dense.probs.log().abs() / 2048 + 1e-3;
  EXPECT_TRUE(
      ((logp->probs / dense.probs).log().abs() <= bound).all().item<bool>());
}

TEST(TargetsCodecTest, LogProbabilitiesRefuseLyingMessages) {
  auto dense = losses::TeacherTargets::DenseFromLogits(SeventhsLogits(), 1.0);
  const v1::SoftTargets good = *EncodeTargets(dense, v1::DENSE_LOGP_FP16);
  ASSERT_THAT(DecodeTargets(good, 1).status(), IsOk());
  const auto with_values = [&](std::vector<float> values) {
    v1::SoftTargets m = good;
    *m.mutable_probs() =
        ToProto(torch::tensor(values).view({1, 3}), v1::Tensor::FLOAT16);
    return DecodeTargets(m, 1).status();
  };
  EXPECT_THAT(with_values({0.5f, -1.0f, -2.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "log-probabilities must be numbers <= 0"));
  EXPECT_THAT(with_values({NAN, -1.0f, -2.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "log-probabilities must be numbers <= 0"));
  // All zeros in log space: three probabilities of 1.
  EXPECT_THAT(with_values({0.0f, 0.0f, 0.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("log-probability rows must each sum to 1 "
                                 "(within 0.01); row 0 sums to 3")));
  // A probability of 0 is -inf, and fine.
  EXPECT_THAT(with_values({0.0f, -INFINITY, -INFINITY}), IsOk());
  v1::SoftTargets wrong_width = good;
  wrong_width.set_num_classes(4);
  EXPECT_THAT(DecodeTargets(wrong_width, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("with C = num_classes 4, got [1, 3]")));
}

// The log-probabilities at ids a client chose, normalized over all classes:
// checked against log softmax computed here in double precision.
TEST(TargetsCodecTest, IndexLogProbabilitiesAreTheLogSoftmaxAtTheIds) {
  torch::manual_seed(3);
  const torch::Tensor logits = 4 * torch::randn({2, 3, 10});
  const torch::Tensor ids = torch::stack({torch::randperm(10).narrow(0, 0, 4),
                                          torch::randperm(10).narrow(0, 0, 4),
                                          torch::randperm(10).narrow(0, 0, 4)})
                                .unsqueeze(0)
                                .repeat({2, 1, 1});
  auto message = EncodeAtIndices(logits, 2.0, ids);
  ASSERT_THAT(message.status(), IsOk());
  EXPECT_EQ(message->encoding(), v1::INDEX_LOGP);
  EXPECT_EQ(message->index_logp().dtype(), v1::Tensor::FLOAT32);
  const torch::Tensor want =
      torch::log_softmax(logits.to(torch::kDouble) / 2.0, -1).gather(-1, ids);
  auto logp = FromProto(message->index_logp(), "index_logp");
  ASSERT_THAT(logp.status(), IsOk());
  EXPECT_TRUE(torch::allclose(logp->to(torch::kDouble), want, 0, 1e-5));
  auto tail = FromProto(message->tail_mass(), "tail_mass");
  ASSERT_THAT(tail.status(), IsOk());
  EXPECT_TRUE(torch::allclose(tail->to(torch::kDouble), 1 - want.exp().sum(-1),
                              0, 1e-6));

  auto decoded = DecodeTargets(*message, 2, nullptr, ids);
  ASSERT_THAT(decoded.status(), IsOk());
  EXPECT_EQ(decoded->form, losses::TeacherTargets::Form::kTopK);
  EXPECT_TRUE(torch::equal(decoded->indices, ids));
  EXPECT_TRUE(
      torch::allclose(decoded->values.to(torch::kDouble), want.exp(), 0, 1e-6));
  EXPECT_THAT(DecodeTargets(*message, 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("this one sent none")));
  EXPECT_THAT(
      DecodeTargets(*message, 2, nullptr, ids.narrow(-1, 0, 3)).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("index log-probability shapes disagree")));
}

TEST(TargetsCodecTest, IndexLogProbabilitiesRefuseLyingMessages) {
  const torch::Tensor logits = torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}});
  const torch::Tensor ids = torch::tensor({{3L, 0L}});
  const v1::SoftTargets good = *EncodeAtIndices(logits, 1.0, ids);
  ASSERT_THAT(DecodeTargets(good, 1, nullptr, ids).status(), IsOk());
  const auto with = [&](std::vector<float> logp, float tail) {
    v1::SoftTargets m = good;
    *m.mutable_index_logp() =
        ToProto(torch::tensor(logp).view({1, 2}), v1::Tensor::FLOAT32);
    *m.mutable_tail_mass() =
        ToProto(torch::tensor({tail}), v1::Tensor::FLOAT32);
    return DecodeTargets(m, 1, nullptr, ids).status();
  };
  EXPECT_THAT(with({0.5f, -1.0f}, 0.0f),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "index_logp must be log-probabilities (numbers <= 0)"));
  EXPECT_THAT(with({NAN, -1.0f}, 0.0f),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "index_logp must be log-probabilities (numbers <= 0)"));
  // Each listed class with probability 1.
  EXPECT_THAT(with({0.0f, 0.0f}, 0.0f),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("index probabilities plus tail_mass must each "
                                 "sum to 1 (within 0.001); row 0 sums to 2")));
  EXPECT_THAT(with({std::log(0.5f), std::log(0.5f)}, -0.1f),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "tail_mass must be a finite probability in [0, 1]"));
  // A class of probability 0 (-inf) is a distribution still.
  EXPECT_THAT(with({0.0f, -INFINITY}, 0.0f), IsOk());
  v1::SoftTargets half = good;
  *half.mutable_index_logp() =
      ToProto(torch::zeros({1, 2}), v1::Tensor::FLOAT16);
  EXPECT_THAT(
      DecodeTargets(half, 1, nullptr, ids).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index_logp")));
  EXPECT_THAT(DecodeTargets(good, 2, nullptr, ids).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not cover 2 samples")));
}

// Hidden states in fp16 with the head on the trainer's side: the exact
// full-vocabulary distribution, up to fp16 rounding of h, at 2 x H bytes
// per position (512 at H = 256, where dense fp16 takes 64,000).
TEST(TargetsCodecTest, HiddenStatesGiveTheDenseDistributionAtV32000) {
  torch::manual_seed(12);
  const int64_t vocab = 32000, width = 256;
  auto head = std::make_shared<losses::OutputHead>();
  head->weight = torch::randn({vocab, width}) * (3.0 / std::sqrt(width));
  const torch::Tensor h = torch::randn({2, 4, width});
  const double temperature = 2.0;
  const auto targets = losses::TeacherTargets::FromHidden(h, head, temperature);
  const absl::StatusOr<v1::SoftTargets> wire =
      EncodeTargets(targets, v1::HIDDEN_FP16);
  ASSERT_THAT(wire.status(), IsOk());
  EXPECT_EQ(wire->hidden().data().size(), 2u * 4 * 2 * width);
  auto decoded = DecodeTargets(*wire, 2, head);
  ASSERT_THAT(decoded.status(), IsOk());
  EXPECT_EQ(decoded->form, losses::TeacherTargets::Form::kHidden);
  EXPECT_EQ(decoded->batch_shape(), torch::IntArrayRef({2, 4}));
  EXPECT_EQ(decoded->num_classes, vocab);
  // The reference in float64, straight from h and the weight.
  const torch::Tensor want = torch::softmax(
      torch::matmul(h.to(torch::kDouble), head->weight.to(torch::kDouble).t()) /
          temperature,
      -1);
  const losses::TeacherTargets dense = decoded->Materialized();
  EXPECT_EQ(dense.form, losses::TeacherTargets::Form::kDense);
  EXPECT_LT(std::abs(MeanKl(want, dense.probs)), 1e-6);
  // What travelled is h rounded to fp16, nothing else.
  EXPECT_TRUE(
      torch::equal(decoded->hidden, h.to(torch::kHalf).to(torch::kFloat)));
}

TEST(TargetsCodecTest, HiddenStatesRefuseLyingMessages) {
  auto head = std::make_shared<losses::OutputHead>();
  head->weight = torch::randn({10, 4});
  const v1::SoftTargets good = *EncodeTargets(
      losses::TeacherTargets::FromHidden(torch::randn({2, 3, 4}), head, 1.0),
      v1::HIDDEN_FP16);
  ASSERT_THAT(DecodeTargets(good, 2, head).status(), IsOk());
  EXPECT_THAT(DecodeTargets(good, 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("need the teacher's output head")));
  auto wider = std::make_shared<losses::OutputHead>();
  wider->weight = torch::randn({10, 5});
  EXPECT_THAT(
      DecodeTargets(good, 2, wider).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("hidden must be [N, H] or [N, S, H] with H = 5 (the "
                         "output head's width), got [2, 3, 4]")));
  v1::SoftTargets classes = good;
  classes.set_num_classes(11);
  EXPECT_THAT(DecodeTargets(classes, 2, head).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("over num_classes 11 but the output head "
                                 "has 10 rows")));
  EXPECT_THAT(DecodeTargets(good, 3, head).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not cover 3 samples")));
  v1::SoftTargets nan = good;
  *nan.mutable_hidden() =
      ToProto(torch::full({2, 3, 4}, std::nanf("")), v1::Tensor::FLOAT16);
  EXPECT_THAT(DecodeTargets(nan, 2, head).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "hidden must be finite numbers"));
  v1::SoftTargets fp32 = good;
  *fp32.mutable_hidden() =
      ToProto(torch::zeros({2, 3, 4}), v1::Tensor::FLOAT32);
  EXPECT_THAT(DecodeTargets(fp32, 2, head).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("hidden must be FLOAT16")));
}

TEST(TargetsCodecTest, PackedTopKDecodesToTheTopKTargetsWithinItsError) {
  torch::manual_seed(7);
  const torch::Tensor logits = 4 * torch::randn({3, 5, 500});
  auto topk = losses::TeacherTargets::TopKFromLogits(logits, 2.0, 16);
  auto message = EncodeTargets(topk, v1::TOP_K_PACKED);
  ASSERT_THAT(message.status(), IsOk());
  EXPECT_EQ(message->top_k(), 16);
  // 8 + 16 x 9 bits (V = 500) / 8 + 16 = 42 bytes a row, and the tail.
  EXPECT_THAT(message->topk_packed().shape(), ::testing::ElementsAre(3, 5, 42));
  auto back = DecodeTargets(*message, 3);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->form, losses::TeacherTargets::Form::kTopK);
  EXPECT_TRUE(torch::equal(back->indices, topk.indices));
  EXPECT_TRUE(torch::equal(back->tail_mass, topk.tail_mass));
  // Rows sum to exactly 1 with the tail (scaled after decoding)...
  EXPECT_TRUE(torch::allclose(back->values.sum(-1) + back->tail_mass,
                              torch::ones({3, 5}), 0, 1e-5));
  // ...and each value is within a few percent of the exact one.
  EXPECT_LT((back->values / topk.values - 1).abs().max().item<float>(), 0.05);
}

TEST(TargetsCodecTest, PackedTopKRefusesLyingMessages) {
  auto topk = losses::TeacherTargets::TopKFromLogits(SeventhsLogits(), 1.0, 2);
  const v1::SoftTargets good = *EncodeTargets(topk, v1::TOP_K_PACKED);
  ASSERT_THAT(DecodeTargets(good, 1).status(), IsOk());
  v1::SoftTargets wrong_k = good;
  wrong_k.set_top_k(3);
  EXPECT_THAT(
      DecodeTargets(wrong_k, 1).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "topk_packed rows must be 12 bytes (k = 3, 2-bit ids), got 11"));
  v1::SoftTargets no_k = good;
  no_k.set_top_k(0);
  EXPECT_THAT(DecodeTargets(no_k, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "top-k k = 0 must be in [1, num_classes = 3]"));
  // A tail that leaves the listed values far from 1 - tail: 4/7 + 2/7 + 0.5.
  v1::SoftTargets heavy_tail = good;
  const float half = 0.5f;
  heavy_tail.mutable_tail_mass()->set_data(&half, 4);
  EXPECT_THAT(DecodeTargets(heavy_tail, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must sum to 1 within the quantization "
                                 "error; row 0 sums to 1.357")));
  v1::SoftTargets wrong_rows = good;
  EXPECT_THAT(DecodeTargets(wrong_rows, 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not cover 2 samples")));
}

TEST(TargetsCodecTest, SequenceTargetsKeepTheirShape) {
  torch::Tensor logits = torch::randn({2, 5, 11});
  auto topk = losses::TeacherTargets::TopKFromLogits(logits, 2.0, 4);
  auto back = DecodeTargets(*EncodeTargets(topk, v1::TOP_K), 2);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->values.sizes(), torch::IntArrayRef({2, 5, 4}));
  EXPECT_EQ(back->tail_mass.sizes(), torch::IntArrayRef({2, 5}));
  EXPECT_TRUE(torch::equal(back->indices, topk.indices));
}

TEST(TargetsCodecTest, EncodingMustFitTheForm) {
  auto dense = losses::TeacherTargets::DenseFromLogits(SeventhsLogits(), 1.0);
  EXPECT_THAT(EncodeTargets(dense, v1::TOP_K).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cannot encode dense targets as TOP_K"));
  auto topk = losses::TeacherTargets::TopKFromLogits(SeventhsLogits(), 1.0, 2);
  EXPECT_THAT(EncodeTargets(topk, v1::DENSE_FP16).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cannot encode top-k targets as DENSE_FP16"));
}

TEST(TargetsCodecTest, SampledRoundTripSendsOnlyTheUsedColumns) {
  torch::manual_seed(5);
  // Peaked rows: 12 draws hit few distinct ids, so fewer than 12 columns
  // travel; the decoder pads them back to 12.
  const torch::Tensor logits = torch::randn({2, 5, 40}) * 4;
  const auto sampled =
      losses::TeacherTargets::SampledFromLogits(logits, 1.0, 12);
  auto message = EncodeTargets(sampled, v1::SAMPLED);
  ASSERT_THAT(message.status(), IsOk());
  const int64_t distinct = (sampled.values > 0).sum(-1).max().item<int64_t>();
  ASSERT_LT(distinct, 12);
  EXPECT_EQ(message->samples(), 12);
  EXPECT_THAT(message->sample_ids().shape(),
              ::testing::ElementsAre(2, 5, distinct));
  EXPECT_EQ(message->sample_counts().data().size(), 2 * 5 * distinct);
  auto back = DecodeTargets(*message, 2);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->form, losses::TeacherTargets::Form::kSampled);
  EXPECT_EQ(back->samples, 12);
  EXPECT_TRUE(torch::equal(back->indices, sampled.indices));
  EXPECT_TRUE(torch::equal(back->values, sampled.values));
  EXPECT_TRUE(torch::equal(back->tail_mass, torch::zeros({2, 5})));
}

// A message as any peer would write it from the .proto: ids 7 and 2 drawn
// 3 times and once of 4 draws.
v1::SoftTargets HandSampled() {
  v1::SoftTargets m;
  m.set_temperature(2.0);
  m.set_encoding(v1::SAMPLED);
  m.set_num_classes(10);
  m.set_samples(4);
  m.mutable_sample_ids()->set_dtype(v1::Tensor::INT32);
  m.mutable_sample_ids()->add_shape(1);
  m.mutable_sample_ids()->add_shape(2);
  m.mutable_sample_ids()->set_data(std::string("\x07\0\0\0\x02\0\0\0", 8));
  m.mutable_sample_counts()->set_dtype(v1::Tensor::UINT8);
  m.mutable_sample_counts()->add_shape(1);
  m.mutable_sample_counts()->add_shape(2);
  m.mutable_sample_counts()->set_data(std::string("\x03\x01", 2));
  return m;
}

TEST(TargetsCodecTest, SampledFromAHandWrittenMessage) {
  auto t = DecodeTargets(HandSampled(), 1);
  ASSERT_THAT(t.status(), IsOk());
  EXPECT_TRUE(
      torch::equal(t->indices, torch::tensor({{7, 2, 0, 0}}, torch::kLong)));
  EXPECT_TRUE(
      torch::equal(t->values, torch::tensor({{0.75f, 0.25f, 0.f, 0.f}})));
  EXPECT_EQ(t->samples, 4);
}

TEST(TargetsCodecTest, SampledRefusesLyingMessages) {
  v1::SoftTargets m = HandSampled();
  m.mutable_sample_counts()->set_data(std::string("\x03\x02", 2));
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sample_counts must sum to samples = 4 in every row; a "
                       "row sums to 5"));
  m = HandSampled();
  m.set_num_classes(7);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sample_ids must be in [0, 7)"));
  m = HandSampled();
  m.set_samples(1);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("1 <= w <= samples = 1")));
  for (int bad : {0, 256}) {
    m = HandSampled();
    m.set_samples(bad);
    EXPECT_THAT(
        DecodeTargets(m).status(),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("samples must be in [1, 255], got ", bad)));
  }
  m = HandSampled();
  m.mutable_sample_counts()->set_dtype(v1::Tensor::INT32);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sample_counts must be UINT8, got INT32"));
  EXPECT_THAT(DecodeTargets(HandSampled(), 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sample_ids shape [1, 2] does not cover 2 samples"));
  auto sampled =
      losses::TeacherTargets::SampledFromLogits(SeventhsLogits(), 1.0, 3);
  EXPECT_THAT(EncodeTargets(sampled, v1::TOP_K).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cannot encode sampled targets as TOP_K"));
}

TEST(TargetsCodecTest, RefusesBadMessages) {
  auto topk = losses::TeacherTargets::TopKFromLogits(SeventhsLogits(), 1.0, 2);
  const v1::SoftTargets good = *EncodeTargets(topk, v1::TOP_K);

  v1::SoftTargets m = good;
  m.set_temperature(0);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("temperature must be finite and >= 0.001, "
                                 "got 0")));
  m.set_temperature(1e-40);
  EXPECT_THAT(
      DecodeTargets(m).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 1e-40")));

  // Rows that are not distributions: all zeros (a loss of 0 to train on)
  // and top-k values whose tail does not complete them.
  losses::TeacherTargets zeros;
  zeros.form = losses::TeacherTargets::Form::kDense;
  zeros.temperature = 1.0;
  zeros.num_classes = 2;
  zeros.probs = torch::tensor({{0.25F, 0.75F}, {0.F, 0.F}});
  v1::SoftTargets dense = *EncodeTargets(zeros, v1::DENSE_FP32);
  EXPECT_THAT(DecodeTargets(dense).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "probs rows must each sum to 1 (within 0.001); row 1 "
                       "sums to 0"));
  m = good;
  v1::Tensor tail = m.tail_mass();
  const float half = 0.5F;
  tail.set_data(std::string(reinterpret_cast<const char*>(&half), 4));
  *m.mutable_tail_mass() = tail;
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("top-k values plus tail_mass must each sum "
                                 "to 1 (within 0.01); row 0 sums to 1.35")));

  m = good;
  m.set_num_classes(2);  // index 2 is now out of range, and k = 2 still fits
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "topk_indices must be in [0, 2)"));

  m = good;
  m.set_num_classes(1);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "top-k k = 2 must be in [1, num_classes = 1]"));

  m = good;
  *m.mutable_tail_mass() = ToProto(torch::zeros({2}), v1::Tensor::FLOAT32);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("top-k shapes disagree")));

  EXPECT_THAT(DecodeTargets(good, /*expected_rows=*/3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "topk_values shape [1, 2] does not cover 3 samples"));

  m = good;
  *m.mutable_topk_values() =
      ToProto(torch::tensor({{NAN, 0.5f}}), v1::Tensor::FLOAT16);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("finite probabilities")));

  m = good;
  m.set_encoding(v1::DENSE_FP32);
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "probs must be FLOAT32, got DTYPE_UNSPECIFIED"));

  m = good;
  m.set_encoding(static_cast<v1::Encoding>(42));
  EXPECT_THAT(DecodeTargets(m).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "soft targets have unknown encoding encoding 42"));
}

}  // namespace
}  // namespace distill::teacher
