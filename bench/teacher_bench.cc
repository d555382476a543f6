// The teacher service's wire, side by side: for dense fp32, dense fp16,
// top-k (k = 1, 8, 32, 128, 1,024) and sampled (m = 12, 32) targets, the
// bytes per sample a soft-target answer takes
// on the wire, the samples/s one stream gets through a real gRPC server on
// loopback (client decoding included), and the KL error of the decoded
// targets against dense fp32 -- at C = 10 (the zoo's cnn_teacher on
// Fashion-MNIST-shaped inputs) and at V = 32,000 (a synthetic teacher).
// Then dynamic batching on vs off with several concurrent streams.
// Server and client share this process (and its cores); read the figures as
// ratios.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "losses/teacher_targets.h"
#include "proto/teacher.grpc.pb.h"
#include "student/model.h"
#include "teacher_server/codec.h"
#include "teacher_server/output_head.h"
#include "teacher_server/server.h"

ABSL_FLAG(std::string, teacher_weights, "",
          "Weights of a trained cnn_teacher (default: fresh random weights).");
ABSL_FLAG(int, batch_size, 64, "Samples per request.");
ABSL_FLAG(int64_t, max_transport_mb, -1,
          "The servers' gRPC resource quota, as teacher_server's flag: -1 "
          "automatic (its default), 0 none.");
ABSL_FLAG(int, batches, 40, "Requests per measurement at C = 10.");
ABSL_FLAG(int, vocab_batches, 10, "Requests per measurement at V = 32,000.");
ABSL_FLAG(int, vocab, 32000,
          "The synthetic vocabulary teacher's class count (8192: the "
          "language-model quickstart's).");
ABSL_FLAG(int, streams, 8, "Concurrent streams for the batching comparison.");
ABSL_FLAG(double, temperature_c10, 4.0, "Temperature at C = 10.");
ABSL_FLAG(double, temperature_vocab, 1.0, "Temperature at V = 32,000.");
ABSL_FLAG(int, hidden_size, 512,
          "Hidden width H of the synthetic teacher with a linear head (the "
          "hidden-state table).");

namespace {

namespace teacher = ::distill::teacher;
namespace v1 = ::distill::v1;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "teacher_bench: error: %s\n", message.c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) Die(std::string(value.status().message()));
  return *std::move(value);
}

// The zoo's cnn_teacher, with the given weights or fresh ones.
teacher::ServedModel ZooTeacher(const std::string& dir) {
  std::string weights = absl::GetFlag(FLAGS_teacher_weights);
  if (weights.empty()) {
    torch::manual_seed(1);
    auto model = OrDie(distill::student::Model::Create({"cnn_teacher", "", {}},
                                                       {{1, 28, 28}, 10}));
    weights = dir + "/cnn_teacher.pt";
    if (!model->SaveFile(weights).ok()) Die("cannot write " + weights);
  }
  teacher::ModelSource source;
  source.arch = "cnn_teacher";
  source.weights = weights;
  return OrDie(teacher::LoadServedModel(source));
}

// A synthetic vocabulary-sized teacher: a fixed random two-layer map from
// the image to `vocab` logits, scaled so each sample's distribution has a
// few dominant entries and a long tail, as language models' do.
teacher::ServedModel VocabTeacher(int64_t vocab) {
  torch::manual_seed(2);
  auto hidden = std::make_shared<torch::nn::Linear>(784, 128);
  auto head = std::make_shared<torch::nn::Linear>(128, vocab);
  teacher::ServedModel model;
  model.name = "synthetic_vocab";
  model.hash = "synthetic";
  model.input_shape = {1, 28, 28};
  model.output_shape = {vocab};
  model.forward = [hidden, head](const torch::Tensor& x) {
    torch::Tensor h = torch::tanh((*hidden)->forward(x.flatten(1)) * 4);
    torch::Tensor z = (*head)->forward(h);
    return (z - z.mean(1, true)) / z.std(1, true, true) * 3.0;
  };
  return model;
}

// The same kind of teacher with a linear head over H hidden states (as a
// language model's): logits = W h, W scaled so they spread with a standard
// deviation near 3 like the teacher above. Serves HIDDEN_FP16.
teacher::ServedModel HeadTeacher(int64_t vocab, int64_t width) {
  torch::manual_seed(2);
  auto body = std::make_shared<torch::nn::Linear>(784, width);
  auto head = std::make_shared<distill::losses::OutputHead>();
  head->weight = torch::randn({vocab, width}) * (3.0 / std::sqrt(width));
  teacher::ServedModel model;
  model.name = "synthetic_head";
  model.hash = "synthetic";
  model.input_shape = {1, 28, 28};
  model.output_shape = {vocab};
  model.hidden = [body](const torch::Tensor& x) {
    return torch::tanh((*body)->forward(x.flatten(1)) * 4);
  };
  model.head = head;
  model.head_sha256 = OrDie(teacher::OutputHeadSha256(*head));
  model.forward = [hidden = model.hidden, head](const torch::Tensor& x) {
    return head->Logits(hidden(x));
  };
  return model;
}

std::unique_ptr<v1::Teacher::Stub> Connect(
    const teacher::TeacherServer& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  return v1::Teacher::NewStub(grpc::CreateCustomChannel(
      server.address(), grpc::InsecureChannelCredentials(), args));
}

v1::DistillRequest Batch(uint64_t id, const torch::Tensor& inputs) {
  v1::DistillRequest r;
  r.mutable_batch()->set_batch_id(id);
  *r.mutable_batch()->mutable_inputs() =
      teacher::ToProto(inputs, v1::Tensor::FLOAT32);
  return r;
}

struct StreamFigures {
  double seconds = 0;
  int64_t samples = 0;
  int64_t response_bytes = 0;
  std::vector<distill::losses::TeacherTargets> decoded;
};

// One stream: header, then `inputs` as batches; a writer thread keeps the
// stream full while this thread reads and decodes every answer.
StreamFigures RunStream(
    v1::Teacher::Stub& stub, const v1::StreamHeader& header,
    const std::vector<torch::Tensor>& inputs, bool keep,
    std::shared_ptr<const distill::losses::OutputHead> head = nullptr) {
  std::vector<v1::DistillRequest> requests;
  for (size_t i = 0; i < inputs.size(); ++i)
    requests.push_back(Batch(i, inputs[i]));
  grpc::ClientContext context;
  auto stream = stub.Distill(&context);
  v1::DistillRequest first;
  *first.mutable_header() = header;
  StreamFigures f;
  const auto start = Clock::now();
  std::thread writer([&] {
    stream->Write(first);
    for (const auto& r : requests) {
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
  });
  v1::DistillResponse response;
  size_t i = 0;
  while (stream->Read(&response)) {
    f.response_bytes += response.ByteSizeLong();
    auto targets = OrDie(
        teacher::DecodeTargets(response.targets(), inputs[i].size(0), head));
    f.samples += inputs[i].size(0);
    if (keep) f.decoded.push_back(std::move(targets));
    ++i;
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  if (!status.ok()) Die("stream failed: " + status.error_message());
  f.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return f;
}

// The full distribution the decoded targets stand for: top-k spreads the
// tail mass evenly over the classes it leaves out.
torch::Tensor Dense(const distill::losses::TeacherTargets& t) {
  if (t.form == distill::losses::TeacherTargets::Form::kDense) return t.probs;
  if (t.form == distill::losses::TeacherTargets::Form::kHidden) {
    return t.Materialized().probs;
  }
  if (t.form == distill::losses::TeacherTargets::Form::kSampled) {
    return torch::zeros({t.values.size(0), t.num_classes})
        .scatter_add_(-1, t.indices, t.values);
  }
  const int64_t k = t.values.size(-1);
  torch::Tensor p = (t.tail_mass / std::max<int64_t>(t.num_classes - k, 1))
                        .unsqueeze(-1)
                        .expand({t.values.size(0), t.num_classes})
                        .clone();
  p.scatter_(-1, t.indices, t.values);
  return p;
}

// Mean over samples of KL(p || q).
double MeanKl(const torch::Tensor& p, const torch::Tensor& q) {
  const torch::Tensor pd = p.to(torch::kDouble), qd = q.to(torch::kDouble);
  const torch::Tensor terms =
      torch::where(pd > 0, pd * (pd.log() - qd.clamp_min(1e-30).log()),
                   torch::zeros_like(pd));
  return terms.sum(-1).mean().item<double>();
}

// Every server of the benchmark runs under the same transport quota.
teacher::ServerOptions BenchServerOptions() {
  teacher::ServerOptions options;
  const int64_t mb = absl::GetFlag(FLAGS_max_transport_mb);
  options.max_transport_bytes = mb < 0 ? -1 : mb << 20;
  return options;
}

void EncodingTable(const std::string& title, teacher::ServedModel model,
                   double temperature, int batches) {
  const int64_t classes = model.num_classes();
  // With a head: the dense encodings beside hidden states, which the
  // client turns into probabilities with the head (its one-time transfer,
  // 4 x V x (H + 1) bytes, not counted per sample).
  const std::shared_ptr<const distill::losses::OutputHead> head = model.head;
  teacher::ServerOptions options = BenchServerOptions();
  options.batcher.max_batch = absl::GetFlag(FLAGS_batch_size);
  options.batcher.max_queue_delay = absl::ZeroDuration();
  auto server = OrDie(teacher::TeacherServer::Start(std::move(model), options));
  auto stub = Connect(*server);
  torch::manual_seed(3);
  std::vector<torch::Tensor> inputs;
  for (int i = 0; i < batches; ++i) {
    inputs.push_back(torch::rand({absl::GetFlag(FLAGS_batch_size), 1, 28, 28}));
  }
  const int64_t input_bytes = Batch(0, inputs[0]).ByteSizeLong();

  std::printf(
      "\n# %s: C = %lld, T = %g, %d requests of %d samples "
      "(request: %.0f bytes/sample)\n",
      title.c_str(), static_cast<long long>(classes), temperature, batches,
      absl::GetFlag(FLAGS_batch_size),
      static_cast<double>(input_bytes) / absl::GetFlag(FLAGS_batch_size));
  std::printf("%-20s %14s %10s %12s %10s %14s %12s %12s\n", "encoding",
              "bytes/sample", "vs fp32", "samples/s", "vs fp32", "KL vs fp32",
              "top-k mass", "KL vs top_k");
  struct Row {
    std::string name;
    v1::Encoding encoding;
    int k;
  };
  std::vector<Row> rows = {{"dense_fp32", v1::DENSE_FP32, 0},
                           {"dense_fp16", v1::DENSE_FP16, 0},
                           {"dense_logp_fp16", v1::DENSE_LOGP_FP16, 0}};
  if (head != nullptr) rows.push_back({"hidden_fp16", v1::HIDDEN_FP16, 0});
  for (int k : {1, 8, 32, 128, 1024}) {
    if (k <= classes && head == nullptr)
      rows.push_back({absl::StrCat("top_k k=", k), v1::TOP_K, k});
  }
  for (int m : {12, 32}) {
    if (head != nullptr) break;
    rows.push_back({absl::StrCat("sampled m=", m), v1::SAMPLED, m});
  }
  // Packed top-k: what packing adds is its KL to the TOP_K row of equal k.
  for (int k : {32, 128, 1024}) {
    if (k <= classes && head == nullptr) {
      rows.push_back({absl::StrCat("top_k_packed k=", k), v1::TOP_K_PACKED, k});
    }
  }
  std::map<int, torch::Tensor> topk_dense;
  torch::Tensor reference;
  double base_bytes = 0, base_rate = 0;
  for (const Row& row : rows) {
    v1::StreamHeader header;
    header.set_temperature(temperature);
    header.set_encoding(row.encoding);
    if (row.encoding == v1::SAMPLED) {
      header.set_samples(row.k);
    } else {
      header.set_top_k(row.k);
    }
    RunStream(*stub, header, {inputs[0]}, false, head);  // warm-up
    StreamFigures f = RunStream(*stub, header, inputs, true, head);
    std::vector<torch::Tensor> dense;
    double mass = 0;
    for (const auto& t : f.decoded) {
      dense.push_back(Dense(t));
      if (t.form == distill::losses::TeacherTargets::Form::kTopK) {
        mass += t.values.sum(-1).sum().item<double>();
      }
    }
    const torch::Tensor all = torch::cat(dense, 0);
    if (!reference.defined()) reference = all;
    const double bytes = static_cast<double>(f.response_bytes) / f.samples;
    const double rate = f.samples / f.seconds;
    if (base_bytes == 0) {
      base_bytes = bytes;
      base_rate = rate;
    }
    const std::string mass_text = distill::teacher::IsTopK(row.encoding)
                                      ? absl::StrCat(mass / f.samples)
                                      : "-";
    if (row.encoding == v1::TOP_K) topk_dense[row.k] = all;
    const std::string packing_text =
        row.encoding == v1::TOP_K_PACKED && topk_dense.count(row.k) > 0
            ? absl::StrFormat("%.3g", MeanKl(topk_dense[row.k], all))
            : std::string("-");
    // One draw's frequencies are not the distribution (their KL to it is
    // large by design); what sampled targets promise is an unbiased mean,
    // tested in losses/builtin_losses_test.cc.
    const std::string kl_text =
        row.encoding == v1::SAMPLED
            ? std::string("unbiased")
            : absl::StrFormat("%.3g", MeanKl(reference, all));
    std::printf("%-20s %14.1f %9.3fx %12.0f %9.2fx %14s %12s %12s\n",
                row.name.c_str(), bytes, bytes / base_bytes, rate,
                rate / base_rate, kl_text.c_str(), mass_text.c_str(),
                packing_text.c_str());
  }
}

void BatchingTable(const std::string& dir) {
  const int streams = absl::GetFlag(FLAGS_streams);
  const int size = absl::GetFlag(FLAGS_batch_size) / 2;
  const int batches = absl::GetFlag(FLAGS_batches);
  std::printf(
      "\n# dynamic batching: cnn_teacher, %d concurrent streams, "
      "%d requests of %d samples each, dense_fp16\n",
      streams, batches, size);
  std::printf("%-28s %12s %10s %16s %10s\n", "server", "samples/s", "ratio",
              "samples/forward", "forwards");
  double base = 0;
  for (bool on : {false, true}) {
    teacher::ServerOptions options = BenchServerOptions();
    options.batcher.max_batch = on ? 256 : size;
    options.batcher.max_queue_delay =
        on ? absl::Milliseconds(2) : absl::ZeroDuration();
    auto server =
        OrDie(teacher::TeacherServer::Start(ZooTeacher(dir), options));
    auto stub = Connect(*server);
    torch::manual_seed(4);
    std::vector<torch::Tensor> inputs;
    for (int i = 0; i < batches; ++i)
      inputs.push_back(torch::rand({size, 1, 28, 28}));
    v1::StreamHeader header;
    header.set_temperature(4.0);
    header.set_encoding(v1::DENSE_FP16);
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    int64_t samples = 0;
    std::vector<int64_t> per(streams);
    for (int s = 0; s < streams; ++s) {
      threads.emplace_back(
          [&, s] { per[s] = RunStream(*stub, header, inputs, false).samples; });
    }
    for (auto& t : threads) t.join();
    for (int64_t n : per) samples += n;
    const double rate =
        samples / std::chrono::duration<double>(Clock::now() - start).count();
    if (base == 0) base = rate;
    const teacher::BatcherStats stats = server->stats();
    std::printf("%-28s %12.0f %9.2fx %16.1f %10lld\n",
                on ? "on (max_batch 256, 2 ms)"
                   : absl::StrCat("off (max_batch ", size, ", 0 ms)").c_str(),
                rate, rate / base,
                static_cast<double>(stats.samples) / stats.forwards,
                static_cast<long long>(stats.forwards));
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           absl::StrCat("teacher_bench_", ::getpid()))
                              .string();
  std::filesystem::create_directories(dir);
  std::printf(
      "# teacher_bench: LibTorch threads %d; server and client in one "
      "process on loopback\n",
      torch::get_num_threads());
  EncodingTable("cnn_teacher (zoo)", ZooTeacher(dir),
                absl::GetFlag(FLAGS_temperature_c10),
                absl::GetFlag(FLAGS_batches));
  if (absl::GetFlag(FLAGS_vocab) < 2) Die("--vocab must be >= 2");
  EncodingTable("synthetic vocabulary teacher",
                VocabTeacher(absl::GetFlag(FLAGS_vocab)),
                absl::GetFlag(FLAGS_temperature_vocab),
                absl::GetFlag(FLAGS_vocab_batches));
  if (absl::GetFlag(FLAGS_hidden_size) < 1) Die("--hidden_size must be >= 1");
  EncodingTable(
      absl::StrCat("synthetic teacher with a linear head, H = ",
                   absl::GetFlag(FLAGS_hidden_size)),
      HeadTeacher(absl::GetFlag(FLAGS_vocab), absl::GetFlag(FLAGS_hidden_size)),
      absl::GetFlag(FLAGS_temperature_vocab),
      absl::GetFlag(FLAGS_vocab_batches));
  BatchingTable(dir);
  std::filesystem::remove_all(dir);
  return 0;
}
