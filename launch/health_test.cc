// CheckServing against a real gRPC server on loopback with gRPC's own health
// service, as the teacher server runs it.
#include "launch/health.h"

#include <gmock/gmock.h>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/testing/status_matchers.h"

namespace distill::launch {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kService[] = "distill.v1.Teacher";

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    // A server needs some service besides health to start; this one
    // answers nothing.
    builder.RegisterCallbackGenericService(&generic_);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    endpoint_ = absl::StrCat("127.0.0.1:", port_);
  }
  void TearDown() override { server_->Shutdown(); }

  grpc::CallbackGenericService generic_;
  int port_ = 0;
  std::string endpoint_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(HealthTest, ServingOnceTheServiceSaysSo) {
  // Not registered yet: the health service does not know it.
  EXPECT_THAT(CheckServing(endpoint_, kService, absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("health check of " + endpoint_ + " failed")));
  server_->GetHealthCheckService()->SetServingStatus(kService, true);
  EXPECT_THAT(CheckServing(endpoint_, kService, absl::Seconds(5)), IsOk());
  server_->GetHealthCheckService()->SetServingStatus(kService, false);
  EXPECT_THAT(CheckServing(endpoint_, kService, absl::Seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       endpoint_ + " reports NOT_SERVING for service "
                                   "'distill.v1.Teacher'"));
}

TEST_F(HealthTest, NobodyListeningIsUnavailable) {
  server_->Shutdown();
  EXPECT_THAT(CheckServing(endpoint_, kService, absl::Seconds(2)),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("health check of " + endpoint_ + " failed")));
}

}  // namespace
}  // namespace distill::launch
