// Fuzzes the teacher server's checks of what a client sends on a Distill
// stream (teacher_server/validation.h): the input is records in
// fuzz_support.h's framing, the first record's first byte picking the
// served model (even: an image classifier, odd: a language model), the
// others DistillRequest messages as a client would send them. A header
// either passes ValidateHeader with values the server can serve or gets an
// error; a batch either becomes a tensor of exactly [N, input_shape...],
// 1 <= N <= max_batch, or gets an error; never a crash or an abort.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/temperature.h"
#include "proto/teacher.pb.h"
#include "teacher_server/codec.h"
#include "teacher_server/validation.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace v1 = distill::v1;
using distill::fuzz::Fail;

constexpr char kTarget[] = "request_validation_fuzzer";

v1::InfoResponse ImageInfo() {
  v1::InfoResponse info;
  info.set_model_name("cnn_teacher");
  for (int64_t d : {1, 28, 28}) info.add_input_shape(d);
  info.set_input_dtype(v1::Tensor::FLOAT32);
  info.add_output_shape(10);
  info.set_num_classes(10);
  info.set_max_batch(64);
  for (auto e : {v1::DENSE_FP32, v1::DENSE_FP16, v1::TOP_K, v1::SAMPLED,
                 v1::TOP_K_PACKED, v1::DENSE_LOGP_FP16}) {
    info.add_encodings(e);
  }
  info.set_max_request_bytes(4 << 20);
  return info;
}

v1::InfoResponse LanguageInfo() {
  v1::InfoResponse info = ImageInfo();
  info.set_model_name("gpt");
  info.clear_input_shape();
  info.add_input_shape(16);
  info.set_input_dtype(v1::Tensor::INT32);
  info.clear_output_shape();
  info.add_output_shape(16);
  info.add_output_shape(50);
  info.set_num_classes(50);
  info.set_max_batch(8);
  info.set_context_length(16);
  return info;
}

void CheckHeader(const v1::StreamHeader& header, const v1::InfoResponse& info) {
  const double t = header.temperature();
  if (!std::isfinite(t) || t < distill::kMinTemperature) {
    Fail(kTarget, "a header with temperature " + std::to_string(t) + " passed");
  }
  if ((header.encoding() == v1::TOP_K ||
       header.encoding() == v1::TOP_K_PACKED) &&
      (header.top_k() < 1 || header.top_k() > info.num_classes())) {
    Fail(kTarget, "a top-k header with top_k " +
                      std::to_string(header.top_k()) + " passed");
  }
  if (header.encoding() == v1::SAMPLED &&
      (header.samples() < 1 || header.samples() > 255)) {
    Fail(kTarget, "a SAMPLED header with samples out of range passed");
  }
}

void CheckInputs(const torch::Tensor& inputs, const v1::InfoResponse& info) {
  if (inputs.dim() != info.input_shape_size() + 1)
    Fail(kTarget, "inputs of the wrong rank");
  if (inputs.size(0) < 1 || inputs.size(0) > info.max_batch()) {
    Fail(kTarget, "a batch size outside [1, max_batch] passed");
  }
  for (int i = 0; i < info.input_shape_size(); ++i) {
    if (inputs.size(i + 1) != info.input_shape(i))
      Fail(kTarget, "inputs of the wrong shape");
  }
}

void WriteSeeds(const std::string& dir) {
  torch::manual_seed(7);  // the same seeds every time
  auto request_with = [](auto fill) {
    v1::DistillRequest request;
    fill(request);
    return request.SerializeAsString();
  };
  auto header = [&](v1::Encoding encoding, int top_k, int samples) {
    return request_with([&](v1::DistillRequest& r) {
      r.mutable_header()->set_temperature(2.0);
      r.mutable_header()->set_encoding(encoding);
      r.mutable_header()->set_top_k(top_k);
      r.mutable_header()->set_samples(samples);
      r.mutable_header()->set_max_answer_bytes(1 << 16);
    });
  };
  auto batch = [&](const torch::Tensor& inputs) {
    return request_with([&](v1::DistillRequest& r) {
      r.mutable_batch()->set_batch_id(3);
      *r.mutable_batch()->mutable_inputs() = *distill::teacher::ToProto(inputs);
    });
  };
  using distill::fuzz::JoinRecords;
  using distill::fuzz::WriteSeed;
  WriteSeed(dir, "image_dense",
            JoinRecords({std::string(1, '\0'), header(v1::DENSE_FP32, 0, 0),
                         batch(torch::rand({2, 1, 28, 28}))}));
  WriteSeed(dir, "image_topk",
            JoinRecords({std::string(1, '\0'), header(v1::TOP_K, 3, 0),
                         batch(torch::rand({1, 1, 28, 28}))}));
  WriteSeed(dir, "lm_sampled",
            JoinRecords({std::string(1, '\1'), header(v1::SAMPLED, 0, 16),
                         batch(torch::randint(0, 50, {2, 16}, torch::kInt))}));
  WriteSeed(dir, "lm_fp16",
            JoinRecords({std::string(1, '\1'), header(v1::DENSE_FP16, 0, 0),
                         batch(torch::randint(0, 50, {3, 16}, torch::kInt))}));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  distill::fuzz::WriteSeedsIfAsked(*argc, *argv, WriteSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const v1::InfoResponse image = ImageInfo();
  static const v1::InfoResponse language = LanguageInfo();
  const std::vector<std::string> records =
      distill::fuzz::SplitRecords(data, size, 17);
  if (records.size() < 2) return 0;
  const v1::InfoResponse& info =
      !records[0].empty() && (records[0][0] & 1) ? language : image;
  for (size_t i = 1; i < records.size(); ++i) {
    v1::DistillRequest request;
    if (!request.ParseFromString(records[i])) continue;
    if (request.has_header()) {
      if (distill::teacher::ValidateHeader(request.header(), info).ok()) {
        CheckHeader(request.header(), info);
      }
    } else if (request.has_batch()) {
      auto inputs = distill::teacher::DecodeInputs(request.batch(), info);
      if (inputs.ok()) CheckInputs(*inputs, info);
    }
  }
  return 0;
}
