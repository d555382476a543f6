// The teacher service on a real gRPC server on loopback, driven through the
// generated C++ stub. Expected soft targets are computed here from the same
// weights with plain torch ops, never by the server's code.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/teacher_wire.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "teacher_server/codec.h"
#include "teacher_server/server.h"

namespace distill::teacher {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::BatchRequest;
using ::distill::testing::HeaderRequest;
using ::distill::testing::kTestArch;
using ::distill::testing::PlainChannel;
using ::distill::testing::ReadFile;
using ::distill::testing::ReferenceLogits;
using ::distill::testing::RunStream;
using ::distill::testing::ScratchDir;
using ::distill::testing::StreamResult;
using ::distill::testing::TestInputs;
using ::distill::testing::WriteTeacherWeights;
using ::testing::HasSubstr;

std::string Sha256Sum(const fs::path& path) {
  std::string out(64, '\0');
  FILE* p = ::popen(("sha256sum " + path.string()).c_str(), "r");
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(std::fread(out.data(), 1, 64, p), 64u);
  ::pclose(p);
  return out;
}

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("teacher_service_test");
    dir_ = &scratch_->path();
    weights_ = new std::string((*dir_ / "teacher.pt").string());
    WriteTeacherWeights(*weights_, /*seed=*/11);
  }
  static void TearDownTestSuite() {
    delete weights_;
    delete scratch_;
  }

  // Starts a server on a free loopback port.
  void Start(ServerOptions options) {
    ModelSource source;
    source.arch = kTestArch;
    source.weights = *weights_;
    auto model = LoadServedModel(source);
    ASSERT_TRUE(model.ok()) << model.status();
    auto server = TeacherServer::Start(*std::move(model), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::Teacher::NewStub(PlainChannel(server_->address()));
  }

  // Checks `response` holds softmax(reference / T) for `inputs`, encoded as
  // `encoding` (with `top_k`).
  void ExpectTargets(const v1::DistillResponse& response, uint64_t batch_id,
                     const torch::Tensor& inputs, double temperature,
                     v1::Encoding encoding, int top_k = 0) {
    EXPECT_EQ(response.batch_id(), batch_id);
    const v1::SoftTargets& t = response.targets();
    EXPECT_EQ(t.temperature(), temperature);
    EXPECT_EQ(t.encoding(), encoding);
    EXPECT_EQ(t.num_classes(), 10);
    const torch::Tensor probs =
        torch::softmax(ReferenceLogits(*weights_, inputs) / temperature, 1);
    if (encoding == v1::SAMPLED) {
      ExpectDraws(t, probs, top_k);
      return;
    }
    if (encoding == v1::TOP_K) {
      auto values = FromProto(t.topk_values(), "values");
      auto indices = FromProto(t.topk_indices(), "indices");
      auto tail = FromProto(t.tail_mass(), "tail");
      ASSERT_TRUE(values.ok() && indices.ok() && tail.ok());
      auto [want_values, want_indices] = probs.topk(top_k, 1);
      ASSERT_EQ(values->sizes(), want_values.sizes());
      EXPECT_TRUE(torch::equal(indices->to(torch::kLong), want_indices));
      EXPECT_TRUE(torch::allclose(values->to(torch::kFloat), want_values,
                                  /*rtol=*/1e-3, /*atol=*/1e-6));
      EXPECT_TRUE(torch::allclose(*tail, 1 - want_values.sum(1), 0, 1e-6));
      return;
    }
    auto got = FromProto(t.probs(), "probs");
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->sizes(), probs.sizes());
    if (encoding == v1::DENSE_FP32) {
      EXPECT_EQ(got->scalar_type(), torch::kFloat);
      EXPECT_LE((*got - probs).abs().max().item<double>(), 1e-6);
    } else {
      EXPECT_EQ(got->scalar_type(), torch::kHalf);
      // Half precision keeps 11 significant bits.
      EXPECT_TRUE(torch::allclose(got->to(torch::kFloat), probs, 1e-3, 1e-7));
    }
  }

  // `t` holds `m` draws per row from `probs`: counts summing to m, and
  // each class drawn about m p times: within 6 standard errors, with 1 / m
  // added to the variance so a rare class drawn once is not a failure.
  static void ExpectDraws(const v1::SoftTargets& t, const torch::Tensor& probs,
                          int m) {
    EXPECT_EQ(t.samples(), m);
    auto ids = FromProto(t.sample_ids(), "ids");
    auto counts = FromProto(t.sample_counts(), "counts");
    ASSERT_TRUE(ids.ok() && counts.ok());
    ASSERT_EQ(ids->size(0), probs.size(0));
    ASSERT_EQ(counts->sizes(), ids->sizes());
    const torch::Tensor drawn =
        torch::zeros(probs.sizes(), torch::kDouble)
            .scatter_add_(1, ids->to(torch::kLong), counts->to(torch::kDouble));
    EXPECT_TRUE(
        torch::equal(drawn.sum(1), torch::full({probs.size(0)}, double(m))));
    const torch::Tensor p = probs.to(torch::kDouble);
    const torch::Tensor se = ((p * (1 - p) + 1.0 / m) / m).sqrt();
    EXPECT_TRUE(((drawn / m - p).abs() <= 6 * se).all().item<bool>())
        << drawn / m << p;
  }

  static ScratchDir* scratch_;
  static const fs::path* dir_;
  static std::string* weights_;
  std::unique_ptr<TeacherServer> server_;
  std::unique_ptr<v1::Teacher::Stub> stub_;
};

ScratchDir* ServiceTest::scratch_ = nullptr;
const fs::path* ServiceTest::dir_ = nullptr;
std::string* ServiceTest::weights_ = nullptr;

TEST_F(ServiceTest, InfoAndHealthDescribeTheTeacher) {
  ServerOptions options;
  options.batcher.max_batch = 8;
  Start(options);
  grpc::ClientContext context;
  v1::InfoResponse info;
  ASSERT_TRUE(stub_->Info(&context, v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.model_name(), "cnn_student");
  EXPECT_EQ(info.model_hash(), Sha256Sum(*weights_));
  EXPECT_THAT(info.input_shape(), ::testing::ElementsAre(1, 28, 28));
  EXPECT_EQ(info.input_dtype(), v1::Tensor::FLOAT32);
  EXPECT_THAT(info.output_shape(), ::testing::ElementsAre(10));
  EXPECT_EQ(info.num_classes(), 10);
  EXPECT_EQ(info.max_batch(), 8);
  EXPECT_THAT(info.encodings(),
              ::testing::ElementsAre(v1::DENSE_FP32, v1::DENSE_FP16, v1::TOP_K,
                                     v1::SAMPLED, v1::TOP_K_PACKED,
                                     v1::DENSE_LOGP_FP16, v1::INDEX_LOGP));
  // Room for 8 samples and 32 class ids each (--max_index_k), and framing.
  EXPECT_EQ(info.max_request_bytes(), 8 * (28 * 28 * 4 + 4 * 32) + 65536);

  auto health =
      grpc::health::v1::Health::NewStub(PlainChannel(server_->address()));
  for (const char* service : {"", "distill.v1.Teacher"}) {
    grpc::ClientContext health_context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&health_context, request, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << service;
  }
}

TEST_F(ServiceTest, OneStreamGetsOrderedDenseTargets) {
  Start(ServerOptions());
  std::vector<torch::Tensor> inputs = {TestInputs(3, 1), TestInputs(1, 2),
                                       TestInputs(5, 3)};
  std::vector<v1::DistillRequest> requests = {
      HeaderRequest(2.0, v1::DENSE_FP32)};
  for (size_t i = 0; i < inputs.size(); ++i) {
    requests.push_back(BatchRequest(100 + i, inputs[i]));
  }
  StreamResult result = RunStream(*stub_, requests);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), 3u);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ExpectTargets(result.responses[i], 100 + i, inputs[i], 2.0, v1::DENSE_FP32);
  }
}

// Four streams with different temperatures and encodings each queue 2
// samples; the batcher waits (up to a minute) for max_batch = 8 samples, so
// all four must share exactly one forward.
// A batch that carries class ids is answered with the teacher's
// log-probabilities at them, whatever the stream's encoding; the stream's
// other batches keep its encoding.
TEST_F(ServiceTest, BatchesWithIndicesGetTheLogSoftmaxAtThem) {
  Start(ServerOptions());
  const torch::Tensor inputs = TestInputs(3, 7);
  const torch::Tensor ids =
      torch::tensor({{9, 0, 4, 2}, {1, 3, 5, 7}, {8, 6, 2, 0}}, torch::kInt);
  v1::DistillRequest indexed = BatchRequest(2, inputs);
  *indexed.mutable_batch()->mutable_indices() = ToProto(ids, v1::Tensor::INT32);
  const torch::Tensor want =
      torch::log_softmax(
          ReferenceLogits(*weights_, inputs).to(torch::kDouble) / 2.0, 1)
          .gather(1, ids.to(torch::kLong));
  auto expect_at_ids = [&](const v1::DistillResponse& response) {
    EXPECT_EQ(response.batch_id(), 2u);
    const v1::SoftTargets& t = response.targets();
    EXPECT_EQ(t.encoding(), v1::INDEX_LOGP);
    EXPECT_EQ(t.temperature(), 2.0);
    auto logp = FromProto(t.index_logp(), "index_logp");
    auto tail = FromProto(t.tail_mass(), "tail_mass");
    ASSERT_TRUE(logp.ok() && tail.ok());
    ASSERT_EQ(logp->sizes(), want.sizes());
    EXPECT_TRUE(torch::allclose(logp->to(torch::kDouble), want, 0, 1e-5))
        << *logp << want;
    EXPECT_TRUE(torch::allclose(tail->to(torch::kDouble), 1 - want.exp().sum(1),
                                0, 1e-6));
  };
  for (const v1::Encoding encoding : {v1::TOP_K, v1::INDEX_LOGP}) {
    SCOPED_TRACE(EncodingName(encoding));
    std::vector<v1::DistillRequest> requests = {HeaderRequest(2.0, encoding, 3),
                                                indexed};
    if (encoding == v1::TOP_K) requests.push_back(BatchRequest(3, inputs));
    StreamResult result = RunStream(*stub_, requests);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    ASSERT_EQ(result.responses.size(), requests.size() - 1);
    expect_at_ids(result.responses[0]);
    if (encoding == v1::TOP_K) {
      ExpectTargets(result.responses[1], 3, inputs, 2.0, v1::TOP_K, 3);
    }
  }

  // A server that takes at most 3 ids a row refuses 4, naming its flag;
  // one that takes none does not offer INDEX_LOGP.
  ServerOptions three;
  three.max_index_k = 3;
  Start(three);
  StreamResult refused =
      RunStream(*stub_, {HeaderRequest(2.0, v1::TOP_K, 3), indexed});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.status.error_message(),
            "batch 2: indices per row must be in [1, 3] (the server's "
            "--max_index_k), got 4");
  ServerOptions none;
  none.max_index_k = 0;
  Start(none);
  EXPECT_THAT(server_->info().encodings(),
              ::testing::Not(::testing::Contains(v1::INDEX_LOGP)));
}

TEST_F(ServiceTest, StreamsShareOneForwardAtTheirOwnTemperatures) {
  ServerOptions options;
  options.batcher.max_batch = 8;
  options.batcher.max_queue_delay = absl::Minutes(1);
  Start(options);
  struct Case {
    double temperature;
    v1::Encoding encoding;
    int top_k;
  };
  const std::vector<Case> cases = {{1.0, v1::DENSE_FP32, 0},
                                   {4.0, v1::SAMPLED, 255},
                                   {2.0, v1::DENSE_FP16, 0},
                                   {3.0, v1::TOP_K, 3}};
  std::vector<StreamResult> results(cases.size());
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < cases.size(); ++i)
    inputs.push_back(TestInputs(2, 10 + i));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] =
          RunStream(*stub_, {HeaderRequest(cases[i].temperature,
                                           cases[i].encoding, cases[i].top_k),
                             BatchRequest(7, inputs[i])});
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    ASSERT_EQ(results[i].responses.size(), 1u);
    ExpectTargets(results[i].responses[0], 7, inputs[i], cases[i].temperature,
                  cases[i].encoding, cases[i].top_k);
  }
  const BatcherStats stats = server_->stats();
  EXPECT_EQ(stats.forwards, 1);
  EXPECT_EQ(stats.max_batches_per_forward, 4);
  EXPECT_EQ(stats.samples, 8);
  const std::string metrics = server_->metrics().Text();
  EXPECT_THAT(metrics,
              HasSubstr("distill_teacher_forward_batch_size_count 1\n"));
  EXPECT_THAT(metrics, HasSubstr("distill_teacher_forward_batch_size_sum 8\n"));
  EXPECT_THAT(metrics, HasSubstr("distill_teacher_samples_total 8\n"));
  // Rows and wire bytes per encoding: two rows each, and the bytes of the
  // messages the streams received.
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string name = v1::Encoding_Name(cases[i].encoding);
    EXPECT_THAT(metrics,
                HasSubstr(absl::StrCat(
                    "distill_teacher_answered_tokens_total{encoding=\"", name,
                    "\"} 2\n")));
    EXPECT_THAT(metrics,
                HasSubstr(absl::StrCat(
                    "distill_teacher_answer_bytes_total{encoding=\"", name,
                    "\"} ", results[i].responses[0].ByteSizeLong(), "\n")));
  }
}

TEST_F(ServiceTest, ManyConcurrentStreamsGetTheirOwnAnswersInOrder) {
  ServerOptions options;
  options.batcher.max_batch = 16;
  options.batcher.max_queue_delay = absl::Milliseconds(1);
  Start(options);
  constexpr int kStreams = 8, kBatches = 5;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::vector<torch::Tensor>> inputs(kStreams);
  for (int s = 0; s < kStreams; ++s) {
    for (int b = 0; b < kBatches; ++b) {
      inputs[s].push_back(TestInputs(1 + (s + b) % 4, 100 * s + b));
    }
  }
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      std::vector<v1::DistillRequest> requests = {
          HeaderRequest(1.0 + s, v1::DENSE_FP32)};
      for (int b = 0; b < kBatches; ++b) {
        requests.push_back(BatchRequest(1000 * s + b, inputs[s][b]));
      }
      results[s] = RunStream(*stub_, requests);
    });
  }
  for (auto& t : threads) t.join();
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(results[s].status.ok()) << results[s].status.error_message();
    ASSERT_EQ(results[s].responses.size(), static_cast<size_t>(kBatches));
    for (int b = 0; b < kBatches; ++b) {
      ExpectTargets(results[s].responses[b], 1000 * s + b, inputs[s][b],
                    1.0 + s, v1::DENSE_FP32);
    }
  }
  EXPECT_EQ(server_->stats().batches, kStreams * kBatches);
}

// One bad request.
struct BadCase {
  std::string name;
  std::vector<v1::DistillRequest> requests;
  grpc::StatusCode code;
  std::string message;
  size_t answered = 0;
};

// Streams beyond max_streams are refused with the limit named; a stream
// that ended frees its place.
TEST_F(ServiceTest, StreamsBeyondTheLimitAreRefused) {
  ServerOptions options;
  options.max_streams = 1;
  options.batcher.max_queue_delay = absl::ZeroDuration();
  Start(options);
  grpc::ClientContext first_context;
  auto first = stub_->Distill(&first_context);
  ASSERT_TRUE(first->Write(HeaderRequest(1.0, v1::DENSE_FP32)));
  ASSERT_TRUE(first->Write(BatchRequest(1, TestInputs(2, 5))));
  v1::DistillResponse response;
  ASSERT_TRUE(first->Read(&response));  // the server holds the stream now

  StreamResult refused = RunStream(*stub_, {HeaderRequest(1.0, v1::DENSE_FP32),
                                            BatchRequest(1, TestInputs(2, 5))});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.status.error_message(),
            "the teacher server already serves 1 streams, its limit "
            "(--max_streams)");

  ASSERT_TRUE(first->WritesDone());
  EXPECT_FALSE(first->Read(&response));
  ASSERT_TRUE(first->Finish().ok());
  // The place is free once the server has seen the stream end: a bounded
  // wait for that, then a stream is served again.
  StreamResult again;
  EXPECT_TRUE(::distill::testing::WaitUntil([&] {
    again = RunStream(*stub_, {HeaderRequest(1.0, v1::DENSE_FP32),
                               BatchRequest(1, TestInputs(2, 5))});
    return again.status.ok();
  }));
  EXPECT_EQ(again.responses.size(), 1u);
}

// The number after `name` in the Prometheus text, or -1.
int64_t MetricValue(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + name.size() + 2));
}

// A reader that never reads, against a server whose forward is held: the
// server stops reading it once max_queued_samples wait (its client is held
// by flow control), and a second stream's batch is still taken and answered
// in its turn, not after the backlog.
TEST_F(ServiceTest, AStreamThatNeverReadsCannotFillTheQueue) {
  absl::Notification release;
  std::atomic<int> forwards{0};
  std::atomic<int> good_at{0};  // the forward that held the good batch
  ServedModel model;
  model.name = "gated";
  model.hash = std::string(64, '0');
  model.input_shape = {1, 28, 28};
  model.output_shape = {10};
  model.forward = [&](const torch::Tensor& x) {
    release.WaitForNotification();
    const int n = ++forwards;
    if (x.abs().sum().item<float>() == 0) good_at = n;
    return torch::zeros({x.size(0), 10});
  };
  ServerOptions options;
  options.batcher.max_batch = 2;
  options.batcher.max_queued_samples = 4;
  options.batcher.max_queue_delay = absl::ZeroDuration();
  auto server = TeacherServer::Start(std::move(model), options);
  ASSERT_TRUE(server.ok()) << server.status();
  stub_ = v1::Teacher::NewStub(PlainChannel((*server)->address()));

  grpc::ClientContext slow_context;
  auto slow = stub_->Distill(&slow_context);
  std::thread writer([&] {
    if (!slow->Write(HeaderRequest(1.0, v1::DENSE_FP32))) return;
    for (uint64_t id = 1; id <= 20; ++id) {
      if (!slow->Write(BatchRequest(id, TestInputs(2, 1)))) return;
    }
  });
  // Bounded wait until the server has read what it will take of the slow
  // stream: the batch in the held forward and 4 queued samples.
  const std::string received = "distill_teacher_received_batches_total";
  EXPECT_TRUE(::distill::testing::WaitUntil(
      [&] { return MetricValue((*server)->metrics().Text(), received) >= 3; }));

  grpc::ClientContext good_context;
  auto good = stub_->Distill(&good_context);
  ASSERT_TRUE(good->Write(HeaderRequest(1.0, v1::DENSE_FP32)));
  ASSERT_TRUE(good->Write(BatchRequest(7, torch::zeros({2, 1, 28, 28}))));
  EXPECT_TRUE(::distill::testing::WaitUntil(
      [&] { return MetricValue((*server)->metrics().Text(), received) >= 4; }));
  // While the forward is held nothing more can be read: the slow stream
  // stays at 3 batches (without the limit it would have been read whole,
  // 20 batches, before the good one), the good one at 1.
  EXPECT_EQ(MetricValue((*server)->metrics().Text(), received), 4);
  release.Notify();
  v1::DistillResponse response;
  ASSERT_TRUE(good->Read(&response));
  EXPECT_EQ(response.batch_id(), 7u);
  // Its turn came after the held forward and one slow batch, not after
  // the slow stream's backlog.
  EXPECT_EQ(good_at.load(), 3);

  ASSERT_TRUE(good->WritesDone());
  EXPECT_FALSE(good->Read(&response));
  EXPECT_TRUE(good->Finish().ok());
  slow_context.TryCancel();
  writer.join();
  slow->Finish();
  (*server)->Shutdown();
}

TEST_F(ServiceTest, EachBadRequestEndsOnlyItsStream) {
  ServerOptions options;
  options.batcher.max_batch = 8;
  options.batcher.max_queue_delay = absl::ZeroDuration();
  Start(options);
  const auto good_header = HeaderRequest(2.0, v1::DENSE_FP32);
  const auto good_batch = BatchRequest(1, TestInputs(2, 5));
  auto with_inputs = [](const v1::Tensor& tensor) {
    v1::DistillRequest r;
    r.mutable_batch()->set_batch_id(1);
    *r.mutable_batch()->mutable_inputs() = tensor;
    return r;
  };
  auto with_indices = [&](const torch::Tensor& ids,
                          v1::Tensor::DType dtype = v1::Tensor::INT32) {
    v1::DistillRequest r = good_batch;
    *r.mutable_batch()->mutable_indices() = ToProto(ids, dtype);
    return r;
  };
  v1::Tensor short_bytes =
      ToProto(torch::zeros({1, 1, 28, 28}), v1::Tensor::FLOAT32);
  short_bytes.set_data(std::string(20, '\0'));
  // 20,000 dimensions (within this server's message limit): echoed whole,
  // the error (60 kB) would pass gRPC's metadata limit and the peer would
  // see only that limit, not the reason.
  v1::Tensor many_dims;
  many_dims.set_dtype(v1::Tensor::FLOAT32);
  for (int i = 0; i < 20000; ++i) many_dims.add_shape(1);
  many_dims.set_data(std::string(4, '\0'));
  const std::vector<BadCase> cases = {
      {"fp16 inputs",
       {good_header,
        with_inputs(ToProto(TestInputs(2, 1), v1::Tensor::FLOAT16))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: inputs must be FLOAT32, got FLOAT16"},
      {"wrong shape",
       {good_header, BatchRequest(1, torch::zeros({2, 1, 28, 27}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: inputs shape [2, 1, 28, 27] must be [N, 1, 28, 28]"},
      {"20,000 dimensions",
       {good_header, with_inputs(many_dims)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: inputs shape [1, 1, 1, 1, 1, 1, 1, 1, ... (20000 "
       "dimensions)] must be [N, 1, 28, 28]"},
      {"empty batch",
       {good_header, BatchRequest(1, torch::zeros({0, 1, 28, 28}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1 is empty"},
      {"over max_batch",
       {good_header, BatchRequest(1, torch::zeros({9, 1, 28, 28}))},
       grpc::StatusCode::RESOURCE_EXHAUSTED,
       "batch 1 has 9 samples; the most one batch may carry is 8"},
      {"byte count",
       {good_header, with_inputs(short_bytes)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: inputs carries 20 bytes but FLOAT32 [1, 1, 28, 28] needs "
       "3136"},
      {"zero temperature",
       {HeaderRequest(0, v1::DENSE_FP32), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.temperature must be a finite number >= 0.001 (smaller ones "
       "overflow z / T), got 0"},
      // Positive but so small that z / T overflows and every row is NaN.
      {"subnormal temperature",
       {HeaderRequest(1e-40, v1::DENSE_FP32), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.temperature must be a finite number >= 0.001 (smaller ones "
       "overflow z / T), got 1e-40"},
      {"smallest double temperature",
       {HeaderRequest(5e-324, v1::TOP_K, 3), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.temperature must be a finite number >= 0.001 (smaller ones "
       "overflow z / T), got 4.94066e-324"},
      {"NaN temperature",
       {HeaderRequest(NAN, v1::DENSE_FP32), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.temperature must be a finite number >= 0.001 (smaller ones "
       "overflow z / T), got nan"},
      {"k above classes",
       {HeaderRequest(1, v1::TOP_K, 11), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.top_k must be in [1, 10] (the teacher's classes), got 11"},
      {"k zero",
       {HeaderRequest(1, v1::TOP_K, 0), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.top_k must be in [1, 10] (the teacher's classes), got 0"},
      {"packed k zero",
       {HeaderRequest(1, v1::TOP_K_PACKED, 0), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.top_k must be in [1, 10] (the teacher's classes), got 0"},
      {"no samples",
       {HeaderRequest(1, v1::SAMPLED, 0), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.samples must be in [1, 255] with encoding SAMPLED, got 0"},
      {"too many samples",
       {HeaderRequest(1, v1::SAMPLED, 256), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.samples must be in [1, 255] with encoding SAMPLED, got 256"},
      {"no encoding",
       {HeaderRequest(1, v1::ENCODING_UNSPECIFIED), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.encoding ENCODING_UNSPECIFIED is not supported; supported: "
       "DENSE_FP32, DENSE_FP16, TOP_K, SAMPLED, TOP_K_PACKED, "
       "DENSE_LOGP_FP16, INDEX_LOGP"},
      {"unknown encoding",
       {HeaderRequest(1, static_cast<v1::Encoding>(9)), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "header.encoding encoding 9 is not supported; supported: DENSE_FP32, "
       "DENSE_FP16, TOP_K, SAMPLED, TOP_K_PACKED, DENSE_LOGP_FP16, "
       "INDEX_LOGP"},
      {"indices out of range",
       {good_header, with_indices(torch::tensor({{0, 10}, {1, 2}}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: index 10 is outside the teacher's classes [0, 10)"},
      {"negative index",
       {good_header, with_indices(torch::tensor({{0, -1}, {1, 2}}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: index -1 is outside the teacher's classes [0, 10)"},
      {"an index twice",
       {good_header, with_indices(torch::tensor({{4, 4}, {1, 2}}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: indices name a class twice within a row; each row must "
       "list distinct classes"},
      {"indices for another batch size",
       {good_header, with_indices(torch::tensor({{0, 1}}))},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: indices shape [1, 2] must be [2, k]"},
      {"more indices than classes",
       {good_header, with_indices(torch::arange(22).view({2, 11}) % 10)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: indices per row must be in [1, 10] (the teacher's classes), "
       "got 11"},
      {"INT64 indices",
       {good_header,
        with_indices(torch::tensor({{0L, 1L}, {1L, 2L}}), v1::Tensor::INT64)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1: indices must be INT32, got INT64"},
      {"INDEX_LOGP without indices",
       {HeaderRequest(1, v1::INDEX_LOGP), good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 1 carries no indices; a stream with encoding INDEX_LOGP must "
       "send them with every batch"},
      {"batch first",
       {BatchRequest(7, TestInputs(1, 1)), good_header},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch 7 arrived before the stream header; the first request must carry "
       "the header"},
      {"second header",
       {good_header, good_batch, good_header},
       grpc::StatusCode::INVALID_ARGUMENT,
       "the stream header was sent twice; it must come once, first",
       1},
      {"duplicate id",
       {good_header, good_batch, good_batch},
       grpc::StatusCode::INVALID_ARGUMENT,
       "batch id 1 was already used in this stream",
       1},
      {"empty request",
       {good_header, v1::DistillRequest()},
       grpc::StatusCode::INVALID_ARGUMENT,
       "a request must carry a header or a batch"},
  };

  // A good stream stays open across all the bad ones.
  grpc::ClientContext good_context;
  auto good = stub_->Distill(&good_context);
  ASSERT_TRUE(good->Write(HeaderRequest(3.0, v1::TOP_K, 4)));
  uint64_t good_id = 0;
  auto good_round = [&] {
    const torch::Tensor inputs = TestInputs(3, 50 + good_id);
    ASSERT_TRUE(good->Write(BatchRequest(good_id, inputs)));
    v1::DistillResponse response;
    ASSERT_TRUE(good->Read(&response));
    ExpectTargets(response, good_id, inputs, 3.0, v1::TOP_K, 4);
    ++good_id;
  };
  good_round();
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    StreamResult result = RunStream(*stub_, c.requests);
    EXPECT_EQ(result.status.error_code(), c.code);
    EXPECT_EQ(result.status.error_message(), c.message);
    ASSERT_EQ(result.responses.size(), c.answered);
    if (c.answered == 1) {
      ExpectTargets(result.responses[0], 1, TestInputs(2, 5), 2.0,
                    v1::DENSE_FP32);
    }
    good_round();
  }

  // A message over max_request_bytes is refused by gRPC itself.
  const int64_t limit = server_->info().max_request_bytes();
  const int64_t samples = limit / (28 * 28 * 4) + 1;
  StreamResult big = RunStream(
      *stub_,
      {good_header, BatchRequest(1, torch::zeros({samples, 1, 28, 28}))});
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.status.error_message(),
              HasSubstr("Received message larger than max"));
  good_round();

  ASSERT_TRUE(good->WritesDone());
  v1::DistillResponse extra;
  EXPECT_FALSE(good->Read(&extra));
  EXPECT_TRUE(good->Finish().ok());
  const auto invalid =
      std::count_if(cases.begin(), cases.end(), [](const BadCase& c) {
        return c.code == grpc::StatusCode::INVALID_ARGUMENT;
      });
  EXPECT_EQ(invalid, 27);
  EXPECT_THAT(server_->metrics().Text(),
              HasSubstr(absl::StrCat("distill_teacher_calls_total{code=\"",
                                     "INVALID_ARGUMENT\",rpc=\"Distill\"} ",
                                     invalid, "\n")));
}

// TLS with a certificate made here by the openssl CLI, and a bearer token:
// calls without the right token are refused UNAUTHENTICATED naming the
// problem, with it they are served; a plaintext client cannot connect.
TEST_F(ServiceTest, TlsAndTokenGuardEveryCall) {
  const fs::path cert = *dir_ / "cert.pem", key = *dir_ / "key.pem";
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
      "-nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
      key.string() + " -out " + cert.string() + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ServerOptions options;
  options.tls_cert_pem = ReadFile(cert);
  options.tls_key_pem = ReadFile(key);
  options.token = "s3cret-token";
  Start(options);

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(cert);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto secure = v1::Teacher::NewStub(grpc::CreateCustomChannel(
      server_->address(), grpc::SslCredentials(ssl), args));

  auto info = [&](v1::Teacher::Stub& stub, const std::string& authorization) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(20));
    if (!authorization.empty())
      context.AddMetadata("authorization", authorization);
    v1::InfoResponse response;
    grpc::Status status = stub.Info(&context, v1::InfoRequest(), &response);
    if (status.ok()) {
      EXPECT_EQ(response.num_classes(), 10);
    }
    return status;
  };
  grpc::Status status = info(*secure, "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(),
            "missing 'authorization: Bearer <token>' metadata");
  status = info(*secure, "Bearer wrong-token");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(), "invalid bearer token");
  status = info(*secure, "Basic s3cret-token");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(),
            "authorization metadata must be 'Bearer <token>'");
  EXPECT_TRUE(info(*secure, "Bearer s3cret-token").ok());

  const torch::Tensor inputs = TestInputs(2, 4);
  StreamResult refused = RunStream(
      *secure, {HeaderRequest(1.0, v1::DENSE_FP32), BatchRequest(1, inputs)});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(refused.status.error_message(),
            "missing 'authorization: Bearer <token>' metadata");
  EXPECT_TRUE(refused.responses.empty());
  StreamResult served = RunStream(
      *secure, {HeaderRequest(1.0, v1::DENSE_FP32), BatchRequest(1, inputs)},
      "s3cret-token");
  ASSERT_TRUE(served.status.ok()) << served.status.error_message();
  ASSERT_EQ(served.responses.size(), 1u);
  ExpectTargets(served.responses[0], 1, inputs, 1.0, v1::DENSE_FP32);

  // Plaintext to a TLS port never gets an answer.
  EXPECT_EQ(info(*stub_, "Bearer s3cret-token").error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

// Waits (bounded) until the metrics show `n` received batches.
bool AwaitReceived(TeacherServer& server, int n) {
  const std::string line =
      "distill_teacher_received_batches_total " + std::to_string(n) + "\n";
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (server.metrics().Text().find(line) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// Batches held by a one-minute queue delay are answered at once when the
// server drains; the stream then ends UNAVAILABLE, and new calls are refused.
TEST_F(ServiceTest, ShutdownAnswersQueuedBatches) {
  ServerOptions options;
  options.batcher.max_batch = 64;
  options.batcher.max_queue_delay = absl::Minutes(1);
  Start(options);
  grpc::ClientContext context;
  auto stream = stub_->Distill(&context);
  const torch::Tensor a = TestInputs(2, 1), b = TestInputs(3, 2);
  ASSERT_TRUE(stream->Write(HeaderRequest(1.5, v1::DENSE_FP32)));
  ASSERT_TRUE(stream->Write(BatchRequest(1, a)));
  ASSERT_TRUE(stream->Write(BatchRequest(2, b)));
  ASSERT_TRUE(AwaitReceived(*server_, 2));
  EXPECT_EQ(server_->stats().forwards, 0);
  std::thread stopper([&] { server_->Shutdown(); });
  v1::DistillResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ExpectTargets(response, 1, a, 1.5, v1::DENSE_FP32);
  ASSERT_TRUE(stream->Read(&response));
  ExpectTargets(response, 2, b, 1.5, v1::DENSE_FP32);
  EXPECT_FALSE(stream->Read(&response));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "the teacher server is shutting down");
  stopper.join();
  grpc::ClientContext info_context;
  info_context.set_deadline(std::chrono::system_clock::now() +
                            std::chrono::seconds(5));
  v1::InfoResponse info;
  EXPECT_FALSE(stub_->Info(&info_context, v1::InfoRequest(), &info).ok());
}

}  // namespace
}  // namespace distill::teacher
