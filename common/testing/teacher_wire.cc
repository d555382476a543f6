#include "common/testing/teacher_wire.h"

#include <gtest/gtest.h>

#include <utility>

#include "student/model.h"
#include "teacher_server/codec.h"

namespace distill::testing {
namespace {

std::unique_ptr<student::Model> MakeModel() {
  auto model = student::Model::Create({kTestArch, "", {}}, {{1, 28, 28}, 10});
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

}  // namespace

void WriteTeacherWeights(const std::string& path, int seed) {
  torch::manual_seed(seed);
  auto model = MakeModel();
  // Non-trivial BatchNorm statistics, so eval and train mode differ more.
  for (auto& [name, buffer] : model->named_buffers()) {
    if (name.find("running_mean") != std::string::npos)
      buffer.uniform_(-0.5, 0.5);
    if (name.find("running_var") != std::string::npos)
      buffer.uniform_(0.5, 2.0);
  }
  ASSERT_TRUE(model->SaveFile(path).ok());
}

torch::Tensor ReferenceLogits(const std::string& path,
                              const torch::Tensor& inputs) {
  auto model = MakeModel();
  EXPECT_TRUE(model->LoadFile(path).ok());
  model->train(false);
  torch::NoGradGuard no_grad;
  return model->forward(inputs);
}

torch::Tensor TestInputs(int64_t n, int seed) {
  torch::manual_seed(seed);
  return torch::rand({n, 1, 28, 28});
}

v1::DistillRequest HeaderRequest(double temperature, v1::Encoding encoding,
                                 int width) {
  v1::DistillRequest request;
  request.mutable_header()->set_temperature(temperature);
  request.mutable_header()->set_encoding(encoding);
  if (encoding == v1::SAMPLED) {
    request.mutable_header()->set_samples(width);
  } else {
    request.mutable_header()->set_top_k(width);
  }
  return request;
}

v1::DistillRequest BatchRequest(uint64_t batch_id,
                                const torch::Tensor& inputs) {
  v1::DistillRequest request;
  request.mutable_batch()->set_batch_id(batch_id);
  *request.mutable_batch()->mutable_inputs() =
      teacher::ToProto(inputs, v1::Tensor::FLOAT32);
  return request;
}

StreamResult RunStream(v1::Teacher::Stub& stub,
                       const std::vector<v1::DistillRequest>& requests,
                       const std::string& token) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  auto stream = stub.Distill(&context);
  for (const auto& request : requests) {
    if (!stream->Write(request)) break;  // the server ended the stream
  }
  stream->WritesDone();
  StreamResult result;
  v1::DistillResponse response;
  while (stream->Read(&response)) result.responses.push_back(response);
  result.status = stream->Finish();
  return result;
}

std::shared_ptr<grpc::Channel> PlainChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

}  // namespace distill::testing
