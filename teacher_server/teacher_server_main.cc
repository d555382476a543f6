// teacher_server: serves a teacher model's soft targets over gRPC
// (distill.v1.Teacher, see proto/teacher.proto and docs/TEACHER_SERVER.md).
// Bad flags or a missing model print one "teacher_server: error: ..." line
// and exit 1. SIGTERM/SIGINT drain the server (in-flight batches are
// answered), remove the registry file and exit 0.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"
#include "common/malloc_tuning.h"
#include "student/model.h"
#include "teacher_server/served_model.h"
#include "teacher_server/server.h"

ABSL_FLAG(std::string, arch, "",
          "Zoo architecture of the teacher (needs --weights).");
ABSL_FLAG(std::string, arch_options, "",
          "Zoo options as name=value,name=value (e.g. width=64,hidden=512).");
ABSL_FLAG(std::string, weights, "",
          "Weights file (model.pt or checkpoint) of --arch.");
ABSL_FLAG(std::string, torchscript, "", "TorchScript teacher file.");
ABSL_FLAG(std::string, input_shape, "1,28,28",
          "One sample's input shape, without the batch dimension.");
ABSL_FLAG(std::string, input_dtype, "float32",
          "Input dtype: float32, int64 or int32.");
ABSL_FLAG(int64_t, num_classes, 10,
          "Classes a zoo teacher is built for (a language model's "
          "vocabulary size).");
ABSL_FLAG(std::string, tokenizer, "",
          "Language models (--input_dtype int32/int64): the tokenizer model "
          "its token ids come from (distill_prepare_text's tokenizer.model); "
          "trainers refuse a teacher whose tokenizer is not their data's.");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on.");
ABSL_FLAG(int, port, 0, "Port to listen on; 0 picks a free one.");
ABSL_FLAG(int64_t, max_open_files, 0,
          "Open files (connections) the server may hold; 0: as many as the "
          "kernel allows it (the hard RLIMIT_NOFILE). Beyond it, new "
          "connections are closed unserved until some close.");
ABSL_FLAG(std::string, port_file, "",
          "Once serving, write the port here (atomically) as \"<port>\\n\".");
ABSL_FLAG(std::string, registry_dir, "",
          "Once serving, write DIR/teacher-<host>-<port>.endpoint holding "
          "\"<host>:<port>\\n\"; removed on shutdown.");
ABSL_FLAG(int, max_batch, 512, "Most samples per request and per forward.");
ABSL_FLAG(int64_t, max_batch_tokens, 16384,
          "Language models: most token positions (samples x window length) "
          "per forward, which bounds the forward's logits; a larger request "
          "runs alone. 0: no limit.");
ABSL_FLAG(int64_t, max_queued_samples, 0,
          "Samples waiting for a forward, across streams, above which streams "
          "stop reading until the forwards catch up; 0: 8 * max_batch.");
ABSL_FLAG(int64_t, idle_timeout_s, 300,
          "Close a connection with no call open this long.");
ABSL_FLAG(int, max_streams, 256,
          "Distill streams served at once; more are refused "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_transport_mb, -1,
          "Memory gRPC's transports may take for buffers, across "
          "connections (its resource quota); -1: 4 x the largest request, "
          "at least 256 MiB; 0: no quota.");
ABSL_FLAG(int64_t, max_queue_delay_us, 2000,
          "How long a batch may wait for others to share its forward.");
ABSL_FLAG(int64_t, max_request_bytes, 0,
          "Largest request accepted; 0: max_batch samples plus 64 KiB.");
ABSL_FLAG(int64_t, max_index_k, 32,
          "Most class ids per output row (position) a batch may ask the "
          "teacher's log-probabilities at (INDEX_LOGP); the default request "
          "limit makes room for them. 0: not offered.");
ABSL_FLAG(int, threads, 0,
          "LibTorch threads for the forward; 0: LibTorch's default.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token every call must carry.");
ABSL_FLAG(int, metrics_port, 0,
          "Serve Prometheus metrics on this port; 0: off.");

namespace {

namespace teacher = ::distill::teacher;

int Fail(const std::string& message) {
  std::fprintf(stderr, "teacher_server: error: %s\n", message.c_str());
  return 1;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          const std::string& what) {
  absl::StatusOr<std::string> bytes = distill::ReadFile(path);
  if (!bytes.ok()) {
    return absl::NotFoundError(absl::StrCat(what, " not found: ", path));
  }
  return bytes;
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input_shape must be positive integers separated by commas, got '",
          text, "'"));
    }
    shape.push_back(d);
  }
  return shape;
}

absl::StatusOr<std::map<std::string, double>> ParseOptions(
    const std::string& text) {
  std::map<std::string, double> options;
  if (text.empty()) return options;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, '=');
    double value = 0;
    if (kv.first.empty() || !absl::SimpleAtod(kv.second, &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--arch_options must be name=value pairs separated by commas, got '",
          text, "'"));
    }
    options[kv.first] = value;
  }
  return options;
}

absl::StatusOr<teacher::ModelSource> SourceFromFlags() {
  teacher::ModelSource source;
  source.arch = absl::GetFlag(FLAGS_arch);
  source.weights = absl::GetFlag(FLAGS_weights);
  source.torchscript = absl::GetFlag(FLAGS_torchscript);
  if (source.arch.empty() == source.torchscript.empty()) {
    return absl::InvalidArgumentError(
        "give either --arch NAME --weights FILE or --torchscript FILE");
  }
  if (!source.arch.empty() && source.weights.empty()) {
    return absl::InvalidArgumentError("--arch needs --weights FILE");
  }
  if (!source.torchscript.empty() && !source.weights.empty()) {
    return absl::InvalidArgumentError(
        "--weights goes with --arch; a TorchScript file carries its weights");
  }
  auto options = ParseOptions(absl::GetFlag(FLAGS_arch_options));
  if (!options.ok()) return options.status();
  source.arch_options = *options;
  auto shape = ParseShape(absl::GetFlag(FLAGS_input_shape));
  if (!shape.ok()) return shape.status();
  source.input_shape = *shape;
  const std::string dtype = absl::GetFlag(FLAGS_input_dtype);
  if (dtype == "float32") {
    source.input_dtype = distill::v1::Tensor::FLOAT32;
  } else if (dtype == "int64") {
    source.input_dtype = distill::v1::Tensor::INT64;
  } else if (dtype == "int32") {
    source.input_dtype = distill::v1::Tensor::INT32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--input_dtype must be float32, int64 or int32, got '", dtype, "'"));
  }
  source.num_classes = absl::GetFlag(FLAGS_num_classes);
  source.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  return source;
}

absl::StatusOr<teacher::ServerOptions> OptionsFromFlags() {
  teacher::ServerOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.batcher.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.batcher.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  if (options.batcher.max_batch_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_batch_tokens must be >= 0, got ",
                     options.batcher.max_batch_tokens));
  }
  const int64_t delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  if (delay_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_queue_delay_us must be >= 0, got ", delay_us));
  }
  options.batcher.max_queue_delay = absl::Microseconds(delay_us);
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.max_index_k = absl::GetFlag(FLAGS_max_index_k);
  if (options.max_index_k < 0) {
    return absl::InvalidArgumentError("--max_index_k must be >= 0");
  }
  if (options.max_request_bytes < 0) {
    return absl::InvalidArgumentError("--max_request_bytes must be >= 0");
  }
  if (options.batcher.max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_batch must be >= 1, got ", options.batcher.max_batch));
  }
  const int64_t queued = absl::GetFlag(FLAGS_max_queued_samples);
  if (queued < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_queued_samples must be >= 0, got ", queued));
  }
  options.batcher.max_queued_samples =
      queued > 0 ? queued : int64_t{8} * options.batcher.max_batch;
  const int64_t idle = absl::GetFlag(FLAGS_idle_timeout_s);
  if (idle < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--idle_timeout_s must be >= 1, got ", idle));
  }
  options.idle_timeout = absl::Seconds(idle);
  options.max_streams = absl::GetFlag(FLAGS_max_streams);
  if (options.max_streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_streams must be >= 1, got ", options.max_streams));
  }
  const int64_t transport_mb = absl::GetFlag(FLAGS_max_transport_mb);
  if (transport_mb < -1 || transport_mb > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_transport_mb must be -1 (automatic) or in [0, "
                     "1048576], got ",
                     transport_mb));
  }
  options.max_transport_bytes = transport_mb < 0 ? -1 : transport_mb << 20;
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--port must be in [0, 65535], got ", options.port));
  }
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (options.metrics_port < 0 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_port must be in [0, 65535], got ", options.metrics_port));
  }
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!cert.empty()) {
    auto cert_pem = ReadWholeFile(cert, "TLS certificate file");
    if (!cert_pem.ok()) return cert_pem.status();
    auto key_pem = ReadWholeFile(key, "TLS key file");
    if (!key_pem.ok()) return key_pem.status();
    options.tls_cert_pem = *cert_pem;
    options.tls_key_pem = *key_pem;
  }
  const std::string token_file = absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty()) {
    auto token = ReadWholeFile(token_file, "token file");
    if (!token.ok()) return token.status();
    options.token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", token_file, " is empty"));
    }
  }
  return options;
}

// Every connection costs a descriptor. The usual soft limit (1024) is far
// below what the kernel allows this process (the hard limit): take it all,
// or `wanted` (> 0) when that is less. Returns the limit now in force.
absl::StatusOr<rlim_t> SetOpenFilesLimit(int64_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return rlim_t{0};
  if (wanted < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_open_files must be >= 0, got ", wanted));
  }
  if (wanted > 0 && static_cast<rlim_t>(wanted) > limit.rlim_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_open_files ", wanted,
                     " is above the hard open-files limit ", limit.rlim_max));
  }
  const rlim_t target =
      wanted > 0 ? static_cast<rlim_t>(wanted) : limit.rlim_max;
  if (limit.rlim_cur != target) {
    rlimit changed = limit;
    changed.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &changed) == 0) return target;
  }
  return limit.rlim_cur;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return distill::WriteStringAtomically(path, text);
}

}  // namespace

int main(int argc, char** argv) {
  // Large tensors reused from the heap, not faulted in again every step.
  distill::TuneMallocForTensors();
  absl::SetProgramUsageMessage(
      "teacher_server (--arch NAME --weights FILE | --torchscript FILE) "
      "[--port N] [--port_file F] [--registry_dir D]: serve a teacher's soft "
      "targets over gRPC");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1)
    return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));

  // Signals are taken by sigwait below; block them before any thread starts
  // so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const absl::StatusOr<rlim_t> open_files =
      SetOpenFilesLimit(absl::GetFlag(FLAGS_max_open_files));
  if (!open_files.ok()) return Fail(std::string(open_files.status().message()));
  auto source = SourceFromFlags();
  if (!source.ok()) return Fail(std::string(source.status().message()));
  auto options = OptionsFromFlags();
  if (!options.ok()) return Fail(std::string(options.status().message()));
  const std::string registry_dir = absl::GetFlag(FLAGS_registry_dir);
  if (!registry_dir.empty() && !std::filesystem::is_directory(registry_dir)) {
    return Fail(
        absl::StrCat("--registry_dir ", registry_dir, " is not a directory"));
  }
  if (absl::GetFlag(FLAGS_threads) < 0) return Fail("--threads must be >= 0");
  if (absl::GetFlag(FLAGS_threads) > 0)
    torch::set_num_threads(absl::GetFlag(FLAGS_threads));

  auto model = teacher::LoadServedModel(*source);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const std::string name = model->name, hash = model->hash;
  std::string how = model->how;
  if (model->context_length > 0) {
    // A language model: what a trainer's data must match.
    absl::StrAppend(&how, how.empty() ? "" : "; ", "token windows of ",
                    model->context_length, ", vocabulary ",
                    model->num_classes(), ", tokenizer ",
                    model->tokenizer_sha256.empty()
                        ? std::string("not stated (--tokenizer)")
                        : model->tokenizer_sha256.substr(0, 12));
  }
  auto server = teacher::TeacherServer::Start(*std::move(model), *options);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  const int port = (*server)->port();
  // Said before the port file announces the server, like everything a
  // launcher may read once it sees that file.
  std::printf("teacher_server: up to %llu open files (connections)\n",
              static_cast<unsigned long long>(*open_files));
  const int64_t transport = (*server)->max_transport_bytes();
  if (transport > 0) {
    std::printf(
        "teacher_server: transport buffers up to %.0f MiB "
        "(--max_transport_mb)\n",
        static_cast<double>(transport) / (1 << 20));
  } else {
    std::printf(
        "teacher_server: transport buffers unbounded "
        "(--max_transport_mb 0)\n");
  }
  std::fflush(stdout);

  // The port file comes last: whoever waits for it (a launcher, a test)
  // finds the registry file written too.
  std::string registry_file;
  if (!registry_dir.empty()) {
    registry_file =
        (std::filesystem::path(registry_dir) /
         absl::StrCat("teacher-", options->host, "-", port, ".endpoint"))
            .string();
    absl::Status written =
        WriteText(registry_file, absl::StrCat(options->host, ":", port, "\n"));
    if (!written.ok()) return Fail(std::string(written.message()));
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    absl::Status written = WriteText(port_file, absl::StrCat(port, "\n"));
    if (!written.ok()) return Fail(std::string(written.message()));
  }
  std::printf("teacher_server: serving %s (sha256 %s%s%s) on %s%s\n",
              name.c_str(), hash.substr(0, 12).c_str(), how.empty() ? "" : "; ",
              how.c_str(), (*server)->address().c_str(),
              options->tls_cert_pem.empty() ? "" : " (TLS)");
  std::fflush(stdout);

  int signo = 0;
  sigwait(&signals, &signo);
  std::printf("teacher_server: signal %d, draining\n", signo);
  std::fflush(stdout);
  if (!registry_file.empty()) std::filesystem::remove(registry_file);
  (*server)->Shutdown();
  const teacher::BatcherStats stats = (*server)->stats();
  std::printf(
      "teacher_server: stopped after %lld batches, %lld samples, %lld "
      "forwards\n",
      static_cast<long long>(stats.batches),
      static_cast<long long>(stats.samples),
      static_cast<long long>(stats.forwards));
  return 0;
}
