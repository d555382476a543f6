// Helpers for tests of the teacher server: a small teacher with fresh
// weights saved to a file, reference soft targets computed independently of
// the server's code path, and a synchronous client for one Distill stream.
#ifndef DISTILL_COMMON_TESTING_TEACHER_WIRE_H_
#define DISTILL_COMMON_TESTING_TEACHER_WIRE_H_

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/teacher.grpc.pb.h"
#include "proto/teacher.pb.h"

namespace distill::testing {

// The architecture the tests serve: small, with BatchNorm and dropout, so a
// server that forgot eval mode gives other numbers.
inline constexpr char kTestArch[] = "cnn_student";

// Builds kTestArch with seed `seed` for [1, 28, 28] inputs and 10 classes
// and saves its weights to `path`.
void WriteTeacherWeights(const std::string& path, int seed);

// Logits of the weights at `path` for `inputs`, in eval mode, by the test
// itself.
torch::Tensor ReferenceLogits(const std::string& path,
                              const torch::Tensor& inputs);

// Deterministic inputs [n, 1, 28, 28].
torch::Tensor TestInputs(int64_t n, int seed);

// `width` is TOP_K's k or SAMPLED's draws per row.
v1::DistillRequest HeaderRequest(double temperature, v1::Encoding encoding,
                                 int width = 0);
v1::DistillRequest BatchRequest(uint64_t batch_id, const torch::Tensor& inputs);

// What one Distill stream got back.
struct StreamResult {
  std::vector<v1::DistillResponse> responses;
  grpc::Status status;
};

// Sends `requests` on one stream, closes the sending side, reads every
// answer and the final status. `token`, when set, goes in the metadata.
StreamResult RunStream(v1::Teacher::Stub& stub,
                       const std::vector<v1::DistillRequest>& requests,
                       const std::string& token = "");

// A client channel to `address` without TLS, with no receive limit.
std::shared_ptr<grpc::Channel> PlainChannel(const std::string& address);

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_TEACHER_WIRE_H_
