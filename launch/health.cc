#include "launch/health.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace distill::launch {

absl::Status CheckServing(const std::string& endpoint,
                          const std::string& service, absl::Duration timeout,
                          const HealthCheckSecurity& security) {
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!security.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = security.tls_ca_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateChannel(endpoint, credentials);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!security.token.empty()) {
    context.AddMetadata("authorization", "Bearer " + security.token);
  }
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "health check of ", endpoint, " failed: ", status.error_message()));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::FailedPreconditionError(
        absl::StrCat(endpoint, " reports ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                         response.status()),
                     " for service '", service, "'"));
  }
  return absl::OkStatus();
}

}  // namespace distill::launch
