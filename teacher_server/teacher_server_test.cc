// The teacher_server binary as users and launchers run it: bad flags, a
// drained shutdown on SIGTERM that answers in-flight batches, the port and
// registry files, and an independent Python client generated from
// proto/teacher.proto getting the same targets as the C++ stub.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/teacher_process.h"
#include "common/testing/teacher_wire.h"
#include "teacher_server/codec.h"

namespace distill::teacher {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::BatchRequest;
using ::distill::testing::BinDir;
using ::distill::testing::FreePort;
using ::distill::testing::HeaderRequest;
using ::distill::testing::kTestArch;
using ::distill::testing::Outcome;
using ::distill::testing::PlainChannel;
using ::distill::testing::ReadFile;
using ::distill::testing::ReferenceLogits;
using ::distill::testing::RunShell;
using ::distill::testing::RunStream;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::SourceDir;
using ::distill::testing::StreamResult;
using ::distill::testing::TeacherServerProcess;
using ::distill::testing::TestInputs;
using ::distill::testing::WriteTeacherWeights;
using ::testing::HasSubstr;

// The body of GET http://127.0.0.1:port/metrics, or "" when unreachable.
std::string FetchMetrics(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = ::read(fd, buffer, sizeof(buffer))) > 0)
        out.append(buffer, n);
    }
  }
  ::close(fd);
  return out;
}

class TeacherServerBinaryTest : public ScratchDirTest {
 protected:
  void SetUp() override {
    weights_ = (dir_ / "teacher.pt").string();
    WriteTeacherWeights(weights_, /*seed=*/3);
  }

  // Runs the binary to completion: exit code (-signal when killed) and
  // stderr.
  std::pair<int, std::string> RunToEnd(const std::string& args) {
    const Outcome o = RunShell(BinDir() + "/teacher_server " + args, dir_);
    return {o.exit_code, o.err};
  }

  // Starts the binary serving the test teacher; returns its port once it
  // serves (bounded wait). When the server exits instead, 0, and its stderr
  // goes to `exit_error` if given, else into a test failure.
  int StartServer(const std::vector<std::string>& extra,
                  std::string* exit_error = nullptr) {
    std::vector<std::string> args = {"--arch", kTestArch, "--weights",
                                     weights_};
    args.insert(args.end(), extra.begin(), extra.end());
    server_.emplace(dir_, "server", args,
                    /*expect_serving=*/exit_error == nullptr);
    if (server_->serving()) return server_->port();
    if (exit_error != nullptr) *exit_error = server_->err();
    server_.reset();
    return 0;
  }

  std::string weights_;
  std::optional<TeacherServerProcess> server_;
};

TEST_F(TeacherServerBinaryTest, BadFlagsExitOneWithOneLine) {
  auto expect = [&](const std::string& args, const std::string& message) {
    auto [code, err] = RunToEnd(args);
    EXPECT_EQ(code, 1) << args;
    EXPECT_EQ(err, "teacher_server: error: " + message + "\n") << args;
  };
  expect("", "give either --arch NAME --weights FILE or --torchscript FILE");
  expect("--arch cnn_student", "--arch needs --weights FILE");
  expect("--arch cnn_student --weights /nonexistent/teacher.pt",
         "weights file not found: /nonexistent/teacher.pt");
  expect("--torchscript /nonexistent/t.pt",
         "TorchScript model file not found: /nonexistent/t.pt");
  expect("--arch resnet --weights " + weights_,
         "unknown model architecture 'resnet'; known architectures: "
         "cnn_student, cnn_teacher, gpt, mlp");
  expect("--arch cnn_teacher --weights " + weights_,
         "loading the teacher's weights: " + weights_ +
             " was written for model 'cnn_student' but the config asks for "
             "'cnn_teacher'");
  expect("--arch cnn_student --weights " + weights_ + " --max_batch 0",
         "--max_batch must be >= 1, got 0");
  expect("--arch cnn_student --weights " + weights_ + " --max_transport_mb -2",
         "--max_transport_mb must be -1 (automatic) or in [0, 1048576], got "
         "-2");
  expect("--arch cnn_student --weights " + weights_ + " --input_shape 1,x,28",
         "--input_shape must be positive integers separated by commas, got "
         "'1,x,28'");
  expect("--arch cnn_student --weights " + weights_ + " --tls_cert c.pem",
         "--tls_cert and --tls_key go together");
  expect("--arch cnn_student --weights " + weights_ +
             " --token_file /nonexistent/token",
         "token file not found: /nonexistent/token");
  expect("--arch cnn_student --weights " + weights_ + " --registry_dir " +
             weights_,
         "--registry_dir " + weights_ + " is not a directory");
  expect("--arch cnn_student --weights " + weights_ + " extra",
         "unexpected argument 'extra'");
}

// SIGTERM while batches sit in the batcher's queue (a one-minute queue
// delay holds them): they are answered at once, the stream ends, the
// registry file goes away and the process exits 0.
TEST_F(TeacherServerBinaryTest, SigtermAnswersInFlightBatchesAndExitsZero) {
  const fs::path registry = dir_ / "registry";
  fs::create_directories(registry);
  // A port free a moment ago may be taken before the server binds it;
  // another is tried then.
  int metrics_port = 0, port = 0;
  for (int attempt = 0; attempt < 5 && port == 0; ++attempt) {
    metrics_port = FreePort();
    std::string error;
    port = StartServer({"--registry_dir", registry.string(), "--max_batch",
                        "64", "--max_queue_delay_us", "60000000",
                        "--metrics_port", std::to_string(metrics_port)},
                       &error);
    if (port == 0) {
      ASSERT_THAT(error, HasSubstr("cannot serve metrics on "));
    }
  }
  ASSERT_GT(port, 0);
  const fs::path endpoint =
      registry / ("teacher-127.0.0.1-" + std::to_string(port) + ".endpoint");
  EXPECT_EQ(ReadFile(endpoint), "127.0.0.1:" + std::to_string(port) + "\n");

  auto stub =
      v1::Teacher::NewStub(PlainChannel("127.0.0.1:" + std::to_string(port)));
  grpc::ClientContext context;
  auto stream = stub->Distill(&context);
  const torch::Tensor a = TestInputs(4, 1), b = TestInputs(2, 2);
  ASSERT_TRUE(stream->Write(HeaderRequest(2.0, v1::DENSE_FP32)));
  ASSERT_TRUE(stream->Write(BatchRequest(10, a)));
  ASSERT_TRUE(stream->Write(BatchRequest(11, b)));
  ASSERT_TRUE(stream->WritesDone());
  // Both batches are in the server once its metrics count them.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string metrics;
  while (metrics.find("distill_teacher_received_batches_total 2\n") ==
             std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    metrics = FetchMetrics(metrics_port);
  }
  ASSERT_THAT(metrics, HasSubstr("distill_teacher_received_batches_total 2\n"));
  EXPECT_THAT(metrics, HasSubstr("distill_teacher_forwards_total 0\n"));

  server_->Signal(SIGTERM);
  v1::DistillResponse response;
  std::vector<torch::Tensor> sent = {a, b};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(stream->Read(&response)) << i;
    EXPECT_EQ(response.batch_id(), 10u + i);
    auto probs = FromProto(response.targets().probs(), "probs");
    ASSERT_TRUE(probs.ok());
    const torch::Tensor want =
        torch::softmax(ReferenceLogits(weights_, sent[i]) / 2.0, 1);
    EXPECT_LE((*probs - want).abs().max().item<double>(), 1e-6);
  }
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
  // A negative code would mean a signal killed it instead of a drain.
  EXPECT_EQ(server_->Wait(), 0);
  EXPECT_FALSE(fs::exists(endpoint));
  const std::string log = ReadFile(dir_ / "server.out");
  EXPECT_THAT(log, HasSubstr("draining"));
  // The log says how the teacher runs: the zoo test teacher is prepared
  // (BatchNorm folded), not run eagerly.
  EXPECT_THAT(log, HasSubstr("; prepared"));
}

// 300 idle TCP connections against a server started with a soft limit of
// 256 open files: before, accept failed with EMFILE and the listener never
// accepted again. The server now raises its soft limit to the hard one, so
// a client written from the proto still gets Info, during and after.
TEST_F(TeacherServerBinaryTest, IdleConnectionsDoNotExhaustDescriptors) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max < 2048) {
    GTEST_SKIP() << "the hard open-files limit " << limit.rlim_max
                 << " leaves no room above 300 connections";
  }
  const rlimit low = {256, limit.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);  // inherited by the server
  const int port = StartServer({});
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_GT(port, 0);
  EXPECT_THAT(server_->out(), HasSubstr("teacher_server: up to " +
                                        std::to_string(limit.rlim_max) +
                                        " open files (connections)"));
  const Outcome client =
      RunShell("/usr/bin/python3 " + SourceDir() + "/tests/hostile_client.py" +
                   " --proto_dir " + SourceDir() +
                   "/proto --address 127.0.0.1:" + std::to_string(port) +
                   " --connections 300",
               dir_);
  ASSERT_EQ(client.exit_code, 0) << client.err;
  EXPECT_THAT(client.out, HasSubstr("info with 300 idle connections: OK"));
  EXPECT_THAT(client.out, HasSubstr("info after closing them: OK"));
  EXPECT_EQ(server_->Terminate(), 0);
}

// 300 idle TCP connections against a server that may hold only 128 open
// files: accept fails with EMFILE. Before, gRPC's listener then never
// accepted again, even after every connection closed. The server's own
// listener sheds what it cannot serve (says so once), and a client written
// from the proto gets Info again once the connections close.
TEST_F(TeacherServerBinaryTest, ListenerRecoversFromRunningOutOfDescriptors) {
  const int port = StartServer({"--max_open_files", "128"});
  ASSERT_GT(port, 0);
  EXPECT_THAT(server_->out(),
              HasSubstr("teacher_server: up to 128 open files (connections)"));
  const Outcome client =
      RunShell("/usr/bin/python3 " + SourceDir() + "/tests/hostile_client.py" +
                   " --proto_dir " + SourceDir() +
                   "/proto --address 127.0.0.1:" + std::to_string(port) +
                   " --connections 300 --retry_seconds 20",
               dir_);
  ASSERT_EQ(client.exit_code, 0) << client.err;
  EXPECT_THAT(client.out, HasSubstr("info after closing them: OK"));
  EXPECT_EQ(server_->Terminate(), 0);
  EXPECT_THAT(server_->err(),
              HasSubstr("teacher_server: no descriptor free for a new "
                        "connection (open files limit 128): "));
}

// gRPC's transport buffers are bounded by default: 4 x the largest request,
// at least 256 MiB (the test teacher's requests are small); 0 lifts it.
TEST_F(TeacherServerBinaryTest, TransportBuffersAreBoundedByDefault) {
  ASSERT_GT(StartServer({}), 0);
  EXPECT_THAT(server_->out(), HasSubstr("teacher_server: transport buffers up "
                                        "to 256 MiB (--max_transport_mb)"));
  EXPECT_EQ(server_->Terminate(), 0);
  // 4 x 100,000,000 bytes = 381 MiB.
  ASSERT_GT(StartServer({"--max_request_bytes", "100000000"}), 0);
  EXPECT_THAT(server_->out(), HasSubstr("teacher_server: transport buffers up "
                                        "to 381 MiB (--max_transport_mb)"));
  EXPECT_EQ(server_->Terminate(), 0);
  ASSERT_GT(StartServer({"--max_transport_mb", "0"}), 0);
  EXPECT_THAT(server_->out(),
              HasSubstr("teacher_server: transport buffers unbounded "
                        "(--max_transport_mb 0)"));
  EXPECT_EQ(server_->Terminate(), 0);
}

// A TCP connection that never says a word of HTTP/2 holds a descriptor: the
// server closes it after --idle_timeout_s. The read below returns 0 (the
// server's close) or -1 when its own 30 s receive timeout passes first.
TEST_F(TeacherServerBinaryTest, SilentConnectionIsClosedAfterTheIdleTimeout) {
  const int port = StartServer({"--idle_timeout_s", "1"});
  ASSERT_GT(port, 0);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const timeval wait = {30, 0};
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)), 0);
  // The server may send its HTTP/2 settings first; read to the end.
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
  }
  EXPECT_EQ(n, 0) << "the connection was still open after 30 s";
  ::close(fd);
  EXPECT_EQ(server_->Terminate(), 0);
}

// A Python client built from proto/teacher.proto by grpc_tools.protoc gets
// the same Info and the same targets as the C++ stub, for every encoding.
TEST_F(TeacherServerBinaryTest, PythonClientGetsTheSameTargets) {
  const int port = StartServer({"--max_queue_delay_us", "0"});
  ASSERT_GT(port, 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto stub = v1::Teacher::NewStub(PlainChannel(address));
  grpc::ClientContext info_context;
  v1::InfoResponse info;
  ASSERT_TRUE(stub->Info(&info_context, v1::InfoRequest(), &info).ok());
  std::ofstream(dir_ / "info.bin", std::ios::binary)
      << info.SerializeAsString();

  const fs::path cases = dir_ / "cases";
  fs::create_directories(cases);
  const std::vector<v1::DistillRequest> headers = {
      HeaderRequest(1.0, v1::DENSE_FP32), HeaderRequest(2.5, v1::DENSE_FP16),
      HeaderRequest(4.0, v1::TOP_K, 3)};
  const v1::DistillRequest batch = BatchRequest(42, TestInputs(5, 9));
  for (size_t i = 0; i < headers.size(); ++i) {
    StreamResult result = RunStream(*stub, {headers[i], batch});
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    ASSERT_EQ(result.responses.size(), 1u);
    const std::string prefix = (cases / std::to_string(i)).string();
    std::ofstream(prefix + ".header.bin", std::ios::binary)
        << headers[i].SerializeAsString();
    std::ofstream(prefix + ".batch.bin", std::ios::binary)
        << batch.SerializeAsString();
    std::ofstream(prefix + ".response.bin", std::ios::binary)
        << result.responses[0].SerializeAsString();
  }
  const std::string cmd = "/usr/bin/python3 " + SourceDir() +
                          "/teacher_server/testdata/python_client.py" +
                          " --proto_dir " + SourceDir() + "/proto --address " +
                          address + " --info " + (dir_ / "info.bin").string() +
                          " --cases " + cases.string() + " > " +
                          (dir_ / "python.out").string() + " 2>&1";
  const Outcome python = RunShell(cmd, dir_);
  const std::string out = ReadFile(dir_ / "python.out");
  ASSERT_EQ(python.exit_code, 0) << out;
  EXPECT_THAT(out, HasSubstr("case 0 DENSE_FP32: OK"));
  EXPECT_THAT(out, HasSubstr("case 1 DENSE_FP16: OK"));
  EXPECT_THAT(out, HasSubstr("case 2 TOP_K: OK"));
  EXPECT_EQ(server_->Terminate(), 0);
}

}  // namespace
}  // namespace distill::teacher
