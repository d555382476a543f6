#include "teacher_server/service.h"

#include <deque>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "teacher_server/auth.h"
#include "teacher_server/chunks.h"
#include "teacher_server/codec.h"
#include "teacher_server/grpc_status.h"
#include "teacher_server/output_head.h"
#include "teacher_server/validation.h"

namespace distill::teacher {
namespace {

constexpr char kShuttingDown[] = "the teacher server is shutting down";

}  // namespace

// One Distill stream. Every event (a read, a write, an answer from the
// batcher, a cancel, a drain) updates the state under `mu_`, decides the
// next gRPC operations there, and starts them after unlocking: gRPC may run
// OnDone (which deletes the reactor) as soon as Finish is called, so nothing
// touches the reactor after an operation is started. The reactor finishes
// only when no batcher callback is outstanding.
class TeacherService::DistillReactor final
    : public grpc::ServerBidiReactor<v1::DistillRequest, v1::DistillResponse> {
 public:
  DistillReactor(TeacherService* service, uint64_t id, absl::Status refusal)
      : service_(service),
        cancelled_flag_(std::make_shared<std::atomic<bool>>(false)),
        origin_{id, cancelled_flag_} {
    if (!refusal.ok()) {
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      Finish(ToGrpcStatus(refusal));
      return;
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      actions = Next();
    }
    Act(actions);
  }

  void Drain() {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
      actions = Next();
    }
    Act(actions);
  }

  // Called after the batcher took queued work: a stream held back by a
  // full queue may read again.
  void Wake() {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      if (!held_) return;
      held_ = false;
      actions = Next();
    }
    Act(actions);
  }

  void OnReadDone(bool ok) override {
    std::optional<std::pair<torch::Tensor, uint64_t>> submit;
    torch::Tensor indices;
    Slot* slot = nullptr;
    v1::StreamHeader header;
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        reads_done_ = true;
      } else if (finished_) {
        // A read that completes after Finish: nobody will take the answer,
        // and a batcher callback could outlive the reactor.
      } else {
        absl::StatusOr<torch::Tensor> inputs = Handle();
        if (!inputs.ok()) {
          slots_.push_back(Slot{true, inputs.status(), {}});
          stop_reading_ = true;
        } else if (inputs->defined()) {
          slots_.emplace_back();
          slot = &slots_.back();
          ++queued_;
          header = *header_;
          submit.emplace(*std::move(inputs), request_.batch().batch_id());
          indices = std::move(indices_);
          indices_ = torch::Tensor();
        }
      }
      // A batch is queued below before `reading_` clears, so no other
      // event can start the next read and queue its batch first.
      if (!submit) {
        reading_ = false;
        actions = Next();
      }
    }
    if (submit) {
      const uint64_t batch_id = submit->second;
      if (service_->metrics_ != nullptr) {
        service_->metrics_->CountReceived();
      }
      const int64_t max_bytes = header.max_answer_bytes();
      service_->batcher_.Submit(
          std::move(submit->first), header, origin_,
          [this, slot, batch_id,
           max_bytes](absl::StatusOr<v1::SoftTargets> answer) {
            OnAnswer(slot, batch_id, max_bytes, std::move(answer));
          },
          std::move(indices));
      absl::MutexLock lock(&mu_);
      reading_ = false;
      actions = Next();
    }
    Act(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      actions = Next();
      if (cancelled_) cancelled_flag_->store(true);
    }
    Act(actions);
  }

  void OnCancel() override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      // Its queued batches are dropped unrun: nobody will read them.
      cancelled_flag_->store(true);
      actions = Next();
    }
    Act(actions);
  }

  void OnDone() override {
    service_->Unregister(this);
    delete this;
  }

 private:
  // A batch read and not yet (wholly) written: its answer's messages (one,
  // or its chunks). `error` set: the stream ends with it once every earlier
  // batch is answered.
  struct Slot {
    bool ready = false;
    absl::Status error;
    std::deque<v1::DistillResponse> responses;
  };
  struct Actions {
    bool read = false;
    bool write = false;
    std::optional<grpc::Status> finish;
  };

  // Validates `request_`. Returns the inputs to queue, an undefined tensor
  // for a header, or the error that ends the stream.
  absl::StatusOr<torch::Tensor> Handle() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (request_.has_header()) {
      if (header_) {
        return absl::InvalidArgumentError(
            "the stream header was sent twice; it must come once, first");
      }
      const absl::Status valid =
          ValidateHeader(request_.header(), service_->info_);
      if (!valid.ok()) return valid;
      header_ = request_.header();
      return torch::Tensor();
    }
    if (!request_.has_batch()) {
      return absl::InvalidArgumentError(
          "a request must carry a header or a batch");
    }
    const uint64_t id = request_.batch().batch_id();
    if (!header_) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch ", id,
                       " arrived before the stream header; the first "
                       "request must carry the header"));
    }
    if (!batch_ids_.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch id ", id, " was already used in this stream"));
    }
    absl::StatusOr<torch::Tensor> inputs =
        DecodeInputs(request_.batch(), service_->info_);
    if (!inputs.ok()) return inputs;
    absl::StatusOr<torch::Tensor> indices =
        DecodeIndices(request_.batch(), service_->info_, *header_,
                      inputs->size(0), service_->options_.max_index_k);
    if (!indices.ok()) return indices.status();
    indices_ = *std::move(indices);
    return inputs;
  }

  // Splits the answer into the messages the stream header allows (outside
  // the lock: a language model's answer is megabytes) and queues them.
  void OnAnswer(Slot* slot, uint64_t batch_id, int64_t max_bytes,
                absl::StatusOr<v1::SoftTargets> answer) {
    absl::StatusOr<std::vector<v1::DistillResponse>> messages =
        answer.ok()
            ? SplitAnswer(batch_id, *answer, max_bytes)
            : absl::StatusOr<std::vector<v1::DistillResponse>>(answer.status());
    if (messages.ok() && service_->metrics_ != nullptr) {
      int64_t bytes = 0;
      for (const v1::DistillResponse& m : *messages) bytes += m.ByteSizeLong();
      service_->metrics_->CountAnswer(EncodingName(answer->encoding()),
                                      AnswerRows(*answer), bytes);
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --queued_;
      slot->ready = true;
      if (messages.ok()) {
        for (v1::DistillResponse& m : *messages) {
          slot->responses.push_back(std::move(m));
        }
      } else {
        slot->error = messages.status();
      }
      actions = Next();
    }
    Act(actions);
  }

  // The operations to start now, given the state.
  Actions Next() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    // std::deque keeps references to the remaining slots valid across
    // pop_front, so the batcher's slot pointers stay good.
    while (!writing_ && !slots_.empty() && slots_.front().ready) {
      Slot& slot = slots_.front();
      if (cancelled_ || !final_.ok() || !slot.error.ok() ||
          slot.responses.empty()) {
        // Nobody to answer, or the error that ends the stream.
        if (!cancelled_ && final_.ok() && !slot.error.ok()) {
          final_ = slot.error;
          cancelled_flag_->store(true);  // the stream ends with it
        }
        slots_.pop_front();
        continue;
      }
      // Chunks go out one write at a time, in order, before the next batch.
      out_ = std::move(slot.responses.front());
      slot.responses.pop_front();
      if (slot.responses.empty()) slots_.pop_front();
      writing_ = true;
      a.write = true;
    }
    const bool ending =
        reads_done_ || stop_reading_ || draining_ || cancelled_ || !final_.ok();
    if (!ending && !reading_ &&
        static_cast<int>(slots_.size()) <
            service_->options_.max_inflight_per_stream) {
      // With the batcher's queue full, a stream that already has a batch
      // queued waits for room (gRPC flow control holds its client); one
      // with none may always queue one, so every stream keeps its turn.
      if (queued_ == 0 || service_->batcher_.HasRoom()) {
        reading_ = true;
        a.read = true;
      } else {
        held_ = true;
      }
    }
    if (ending && !writing_ && slots_.empty()) {
      finished_ = true;
      if (cancelled_) {
        a.finish = grpc::Status::CANCELLED;
      } else if (!final_.ok()) {
        a.finish = ToGrpcStatus(final_);
      } else if (!reads_done_) {
        a.finish = grpc::Status(grpc::StatusCode::UNAVAILABLE, kShuttingDown);
      } else {
        a.finish = grpc::Status::OK;
      }
      if (service_->metrics_ != nullptr) {
        service_->metrics_->CountCall(
            "Distill",
            absl::StatusCodeToString(FromGrpcStatus(*a.finish).code()));
      }
    }
    return a;
  }

  // Starts the decided operations; touches no member after Finish.
  void Act(const Actions& a) {
    if (a.write) StartWrite(&out_);
    if (a.read) StartRead(&request_);
    if (a.finish) Finish(*a.finish);
  }

  TeacherService* const service_;
  // Set once nobody will read this stream's answers: its queued batches
  // are then dropped unrun.
  const std::shared_ptr<std::atomic<bool>> cancelled_flag_;
  const BatchOrigin origin_;

  absl::Mutex mu_;
  // The read and write buffers: one read and one write at a time.
  v1::DistillRequest request_ ABSL_GUARDED_BY(mu_);
  v1::DistillResponse out_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::StreamHeader> header_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> batch_ids_ ABSL_GUARDED_BY(mu_);
  // The class ids of the batch Handle() validated last, if it had any.
  torch::Tensor indices_ ABSL_GUARDED_BY(mu_);
  std::deque<Slot> slots_ ABSL_GUARDED_BY(mu_);
  absl::Status final_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_reading_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Batches handed to the batcher and not yet answered.
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  // It wanted to read but the batcher's queue was full.
  bool held_ ABSL_GUARDED_BY(mu_) = false;
};

TeacherService::TeacherService(const ServedModel* model, ServiceOptions options,
                               ServerMetrics* metrics)
    : options_(std::move(options)),
      model_(model),
      metrics_(metrics),
      batcher_(model, options_.batcher, metrics) {
  batcher_.set_on_room([this] { WakeStreams(); });
  info_.set_model_name(model->name);
  info_.set_model_hash(model->hash);
  for (int64_t d : model->input_shape) info_.add_input_shape(d);
  info_.set_input_dtype(model->input_dtype);
  for (int64_t d : model->output_shape) info_.add_output_shape(d);
  info_.set_num_classes(model->num_classes());
  info_.set_max_batch(options_.batcher.max_batch);
  info_.add_encodings(v1::DENSE_FP32);
  info_.add_encodings(v1::DENSE_FP16);
  info_.add_encodings(v1::TOP_K);
  info_.add_encodings(v1::SAMPLED);
  info_.add_encodings(v1::TOP_K_PACKED);
  info_.add_encodings(v1::DENSE_LOGP_FP16);
  if (options_.max_index_k > 0) info_.add_encodings(v1::INDEX_LOGP);
  if (model->head != nullptr) {
    info_.add_encodings(v1::HIDDEN_FP16);
    info_.set_hidden_size(model->hidden_size());
  }
  info_.set_max_request_bytes(options_.max_request_bytes);
  info_.set_tokenizer_sha256(model->tokenizer_sha256);
  info_.set_context_length(model->context_length);
}

TeacherService::~TeacherService() { batcher_.Stop(); }

grpc::ServerUnaryReactor* TeacherService::Info(
    grpc::CallbackServerContext* context, const v1::InfoRequest* request,
    v1::InfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Status auth =
      CheckBearerToken(context->client_metadata(), options_.token);
  if (auth.ok()) *response = info_;
  if (metrics_ != nullptr) {
    metrics_->CountCall("Info", absl::StatusCodeToString(auth.code()));
  }
  reactor->Finish(ToGrpcStatus(auth));
  return reactor;
}

grpc::ServerUnaryReactor* TeacherService::OutputHead(
    grpc::CallbackServerContext* context, const v1::OutputHeadRequest* request,
    v1::OutputHeadPage* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status =
      CheckBearerToken(context->client_metadata(), options_.token);
  if (status.ok() && model_->head == nullptr) {
    status = absl::FailedPreconditionError(
        "this teacher has no separable output head (hidden_size 0): it "
        "serves no HIDDEN_FP16 targets");
  }
  if (status.ok()) {
    absl::StatusOr<v1::OutputHeadPage> page =
        OutputHeadPageAt(*model_->head, model_->head_sha256,
                         request->first_row(), request->max_bytes());
    if (page.ok()) {
      *response = *std::move(page);
    } else {
      status = page.status();
    }
  }
  if (metrics_ != nullptr) {
    metrics_->CountCall("OutputHead", absl::StatusCodeToString(status.code()));
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerBidiReactor<v1::DistillRequest, v1::DistillResponse>*
TeacherService::Distill(grpc::CallbackServerContext* context) {
  absl::Status refusal =
      CheckBearerToken(context->client_metadata(), options_.token);
  absl::MutexLock lock(&mu_);
  if (refusal.ok() && draining_)
    refusal = absl::UnavailableError(kShuttingDown);
  if (refusal.ok() &&
      static_cast<int>(streams_.size()) >= options_.max_streams) {
    refusal = absl::ResourceExhaustedError(
        absl::StrCat("the teacher server already serves ", streams_.size(),
                     " streams, its limit (--max_streams)"));
  }
  if (!refusal.ok() && metrics_ != nullptr) {
    metrics_->CountCall("Distill", absl::StatusCodeToString(refusal.code()));
  }
  auto* stream = new DistillReactor(this, next_stream_++, refusal);
  // A refused stream is already finished: it does not count.
  if (refusal.ok()) streams_.insert(stream);
  return stream;
}

void TeacherService::Drain() {
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (DistillReactor* stream : streams_) stream->Drain();
  }
  // Queued batches run now instead of waiting out their queue delay.
  batcher_.Stop();
}

void TeacherService::WakeStreams() {
  absl::MutexLock lock(&mu_);
  for (DistillReactor* stream : streams_) stream->Wake();
}

void TeacherService::Unregister(DistillReactor* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

}  // namespace distill::teacher
