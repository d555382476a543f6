// The teacher client's failover grace period against real teacher_server
// processes: it measures answers, not reconnects (broken_teacher_test has
// the server that answers Info and never a batch), and it does not run
// while there is no work, so a trainer that was idle while its server
// restarted is not failed by the first batch after.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/teacher_process.h"
#include "common/testing/teacher_wire.h"
#include "data/dataset.h"
#include "trainer/teacher/internal/remote_teacher.h"

namespace distill::trainer {
namespace {

using ::distill::testing::FreePort;
using ::distill::testing::kTestArch;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::TeacherServerProcess;
using ::distill::testing::WaitUntil;
using ::distill::testing::WriteTeacherWeights;

class RemoteGraceTest : public ScratchDirTest {};

// The server is SIGKILLed while the client has nothing to send, a new one
// takes the same port, and the client stays idle for twice the grace
// period. Before, the grace clock started at the kill and only an answer
// stopped it, so the first batch after failed the run ("no teacher server
// has answered for 1s") although the server was up and answered it.
TEST_F(RemoteGraceTest, IdleWhileTheServerRestartsDoesNotFailTheNextBatch) {
  const std::string weights = (dir_ / "teacher.pt").string();
  WriteTeacherWeights(weights, /*seed=*/3);
  const int port = FreePort();
  const std::vector<std::string> args = {"--arch",    kTestArch,
                                         "--weights", weights,
                                         "--port",    std::to_string(port)};
  std::optional<TeacherServerProcess> server;
  server.emplace(dir_, "first", args);
  ASSERT_TRUE(server->serving());

  RemoteTeacherOptions options;
  options.endpoints = {server->address()};
  options.encoding = v1::DENSE_FP32;
  options.connect_timeout_seconds = 10;
  options.failover_grace_seconds = 1;
  options.answer_timeout_seconds = 60;
  options.input_shape = {1, 28, 28};
  options.num_classes = 10;
  options.max_batch_rows = 4;
  options.max_attempts = 5;
  auto client = RemoteTeacher::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  data::Batch batch;
  batch.ids = torch::arange(4);
  batch.inputs = torch::rand({4, 1, 28, 28});
  batch.labels = torch::zeros({4}, torch::kLong);
  ASSERT_TRUE((*client)->Targets(batch, 2.0).ok());

  server->Kill();
  // The client sees its stream break.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return (*client)->TakeStats().value("teacher_endpoint_failures", 0) > 0;
      },
      std::chrono::seconds(30)));
  server.emplace(dir_, "second", args);
  ASSERT_TRUE(server->serving());
  // The client finds it again on its own (reconnects run while idle).
  ASSERT_TRUE(WaitUntil(
      [&] {
        return (*client)->TakeStats().value("teacher_endpoints_up", 0) == 1;
      },
      std::chrono::seconds(30)));
  // Idle for twice the grace period: the scenario, not a wait for an event.
  std::this_thread::sleep_for(std::chrono::seconds(2));

  const auto targets = (*client)->Targets(batch, 2.0);
  EXPECT_TRUE(targets.ok()) << targets.status();
}

}  // namespace
}  // namespace distill::trainer
