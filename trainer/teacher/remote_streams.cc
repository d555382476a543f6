// RemoteTeacher's dispatch and streams: a submitted batch goes to the
// endpoint with the fewest outstanding samples, on that endpoint's Distill
// stream for its temperature. Per stream, a writer thread opens the call
// and writes the queued batches, and a reader thread pairs answers with
// batches by id and resends what a broken stream leaves unanswered.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "teacher_server/chunks.h"
#include "teacher_server/codec.h"
#include "teacher_server/grpc_status.h"
#include "trainer/teacher/internal/remote_state.h"

namespace distill::trainer {

using remote::Clock;
using remote::Describe;
using remote::Endpoint;
using remote::Pending;
using remote::Result;
using remote::Retryable;
using remote::SecondsBetween;
using remote::Stream;
using teacher::FromGrpcStatus;

TargetsFuture RemoteTeacher::Impl::Submit(const data::Batch& batch,
                                          double temperature) {
  auto pending = std::make_shared<Pending>();
  TargetsFuture future = pending->promise.get_future();
  pending->rows = batch.inputs.size(0);
  if (!options_.tokenizer_sha256.empty()) {
    pending->positions = batch.inputs.size(1);
  }
  pending->temperature = temperature;
  pending->start = Clock::now();
  *pending->request.mutable_batch()->mutable_inputs() =
      teacher::ToProto(batch.inputs, options_.input_dtype);
  if (batch.teacher_indices.defined()) {
    pending->indices = batch.teacher_indices.to(torch::kLong);
    *pending->request.mutable_batch()->mutable_indices() =
        teacher::ToProto(pending->indices, v1::Tensor::INT32);
  }
  absl::MutexLock lock(&mu_);
  pending->id = next_id_++;
  pending->request.mutable_batch()->set_batch_id(pending->id);
  Dispatch(std::move(pending));
  return future;
}

void RemoteTeacher::Impl::Dispatch(std::shared_ptr<Pending> pending) {
  if (!failed_.ok()) {
    pending->promise.set_value(failed_);
    return;
  }
  while (true) {
    std::shared_ptr<Endpoint> best;
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      const auto& endpoint =
          endpoints_[(next_endpoint_ + i) % endpoints_.size()];
      if (endpoint->up &&
          (best == nullptr || endpoint->outstanding < best->outstanding)) {
        best = endpoint;
      }
    }
    ++next_endpoint_;
    if (best == nullptr) {
      waiting_.push_back(std::move(pending));
      wake_.Signal();
      return;
    }
    std::shared_ptr<Stream> stream = StreamFor(best, pending->temperature);
    best->outstanding += pending->rows;
    pending->sent = Clock::now();
    ++pending->attempts;
    stream->inflight[pending->id] = pending;
    absl::MutexLock queue_lock(&stream->queue_mu);
    stream->queue.push_back(std::move(pending));
    return;
  }
}

std::shared_ptr<Stream> RemoteTeacher::Impl::StreamFor(
    const std::shared_ptr<Endpoint>& endpoint, double temperature) {
  for (const auto& stream : endpoint->streams) {
    if (stream->accepting && stream->temperature == temperature) return stream;
  }
  // The header fixes the temperature: retire the endpoint's stream for the
  // previous one (its answered batches let it end, see ReadLoop).
  for (const auto& stream : endpoint->streams) {
    if (stream->accepting) {
      stream->accepting = false;
      if (stream->inflight.empty()) stream->context.TryCancel();
    }
  }
  // Forget streams whose threads have ended (a temperature schedule opens
  // one per step); joining them does not wait.
  auto& streams = endpoint->streams;
  for (auto it = streams.begin(); it != streams.end();) {
    if ((*it)->threads_exited) {
      (*it)->writer.join();
      it = streams.erase(it);
    } else {
      ++it;
    }
  }
  auto stream = std::make_shared<Stream>();
  stream->temperature = temperature;
  Authorize(stream->context);
  stream->writer = std::thread(&Impl::WriteLoop, this, endpoint, stream);
  endpoint->streams.push_back(stream);
  return stream;
}

void RemoteTeacher::Impl::WriteLoop(std::shared_ptr<Endpoint> endpoint,
                                    std::shared_ptr<Stream> stream) {
  // Opening may wait for the connection. A failure here (or of any write)
  // needs nothing more: the reader sees the broken call and resends what is
  // in flight on it.
  stream->rw = endpoint->stub->Distill(&stream->context);
  v1::DistillRequest header;
  header.mutable_header()->set_temperature(stream->temperature);
  header.mutable_header()->set_encoding(options_.encoding);
  header.mutable_header()->set_top_k(options_.top_k);
  header.mutable_header()->set_samples(options_.samples);
  header.mutable_header()->set_max_answer_bytes(options_.max_answer_bytes);
  bool written;
  {
    absl::MutexLock call_lock(&stream->call_mu);
    written = stream->rw->Write(header);
  }
  stream->reader = std::thread(&Impl::ReadLoop, this, endpoint, stream);
  Stream* s = stream.get();
  while (written) {
    std::shared_ptr<Pending> next;
    {
      absl::MutexLock queue_lock(&s->queue_mu);
      s->queue_mu.Await(absl::Condition(
          +[](Stream* st) { return st->closing || !st->queue.empty(); }, s));
      if (s->closing) break;
      next = std::move(s->queue.front());
      s->queue.pop_front();
    }
    // A write may block on flow control (a server that stops reading) until
    // the supervisor's timeout cancels the call.
    absl::MutexLock call_lock(&s->call_mu);
    if (s->finished) break;
    written = s->rw->Write(next->request);
  }
  stream->reader.join();
  absl::MutexLock lock(&mu_);
  stream->threads_exited = true;
}

int64_t RemoteTeacher::Impl::AnswerRowBytes() const {
  // HIDDEN_FP16's width is at most the vocabulary (CheckTeacherInfo).
  const int64_t row = teacher::RowBytes(
      options_.encoding, options_.num_classes,
      options_.encoding == v1::SAMPLED       ? options_.samples
      : options_.encoding == v1::HIDDEN_FP16 ? options_.num_classes
                                             : options_.top_k);
  // Batches with indices are answered as INDEX_LOGP (one id a row at
  // least: the teacher's NLL of the student's samples asks at its tokens).
  return std::max(row, teacher::RowBytes(v1::INDEX_LOGP, options_.num_classes,
                                         static_cast<int32_t>(std::max<int64_t>(
                                             1, options_.index_top_k))));
}

void RemoteTeacher::Impl::ReadLoop(std::shared_ptr<Endpoint> endpoint,
                                   std::shared_ptr<Stream> stream) {
  v1::DistillResponse response;
  std::string protocol_error;
  const int64_t row_bytes = AnswerRowBytes();
  while (stream->rw->Read(&response)) {
    std::shared_ptr<Pending> pending;
    bool complete = true;
    {
      absl::MutexLock lock(&mu_);
      auto it = stream->inflight.find(response.batch_id());
      if (it != stream->inflight.end()) {
        pending = it->second;
        // A chunked answer stays in flight until its last chunk: a stream
        // that breaks before then resends the whole batch.
        complete = response.chunks() == 0 ||
                   pending->chunks.size() + 1 >= response.chunks();
        if (complete) {
          stream->inflight.erase(it);
          endpoint->outstanding -= pending->rows;
        }
      }
    }
    if (pending == nullptr) {
      protocol_error = absl::StrCat("answered batch id ", response.batch_id(),
                                    ", which is not in flight on its stream");
      stream->context.TryCancel();
      break;
    }
    // The stream is not to be trusted: its batches (this one too, put back
    // in flight if taken out above) go to the other servers.
    auto end_stream = [&](std::string error) {
      protocol_error = std::move(error);
      if (complete) {
        absl::MutexLock lock(&mu_);
        stream->inflight.emplace(pending->id, pending);
        endpoint->outstanding += pending->rows;
      }
      stream->context.TryCancel();
    };
    // Every chunk holds at least one row (a sample, or a position of one).
    const int64_t answer_rows =
        pending->rows * std::max<int64_t>(1, pending->positions);
    if (response.chunks() > answer_rows) {
      end_stream(absl::StrCat("announced ", response.chunks(),
                              " chunks for batch ", response.batch_id(),
                              ", which has ", answer_rows, " rows"));
      break;
    }
    if (response.chunks() > 0) {
      // Each chunk is under gRPC's receive limit, but their number is the
      // server's word: the whole answer may take no more than its rows can.
      pending->chunk_bytes += static_cast<int64_t>(response.ByteSizeLong());
      const int64_t most = answer_rows * row_bytes +
                           response.chunks() * teacher::kChunkFramingBytes;
      if (pending->chunk_bytes > most) {
        end_stream(absl::StrCat("sent ", pending->chunk_bytes,
                                " bytes of chunks for batch ",
                                response.batch_id(), ", more than its ",
                                answer_rows, " rows can take (", most, ")"));
        break;
      }
      pending->chunks.push_back(std::move(response));
      response = v1::DistillResponse();
      if (!complete) continue;
      absl::StatusOr<v1::DistillResponse> joined =
          teacher::JoinAnswer(pending->chunks);
      pending->chunks.clear();
      pending->chunk_bytes = 0;
      if (!joined.ok()) {  // chunks out of order, missing or inconsistent
        end_stream(std::string(joined.status().message()));
        break;
      }
      response = *std::move(joined);
    }
    Result result = Decode(*endpoint, *pending, response);
    {
      absl::MutexLock lock(&mu_);
      if (result.ok()) {
        endpoint->failures_in_a_row = 0;
        unanswered_since_.reset();
        latencies_ms_.push_back(1000 *
                                SecondsBetween(pending->start, Clock::now()));
        samples_ += pending->rows;
        // The teacher's own top-k (not the classes a batch chose).
        if (result->form == losses::TeacherTargets::Form::kTopK &&
            !pending->indices.defined()) {
          topk_mass_sum_ +=
              (1 - result->tail_mass).sum().item<double>() /
              std::max<int64_t>(1, result->tail_mass.numel() / pending->rows);
        }
      }
      // A retired stream ends once its last batch is answered.
      if (!stream->accepting && stream->inflight.empty()) {
        stream->context.TryCancel();
      }
    }
    pending->promise.set_value(std::move(result));
  }
  grpc::Status status;
  {
    absl::MutexLock call_lock(&stream->call_mu);
    stream->finished = true;
    status = stream->rw->Finish();
  }
  {
    absl::MutexLock queue_lock(&stream->queue_mu);
    stream->closing = true;
    stream->queue.clear();  // still in flight below: resent from there
  }
  {
    absl::MutexLock lock(&mu_);
    const bool retired = !stream->accepting;
    stream->accepting = false;
    std::map<uint64_t, std::shared_ptr<Pending>> orphans;
    orphans.swap(stream->inflight);
    for (const auto& [id, pending] : orphans) {
      endpoint->outstanding -= pending->rows;
    }
    if (shutting_down_) {
      for (auto& [id, pending] : orphans) {
        pending->promise.set_value(
            absl::CancelledError("teacher client closed"));
      }
      return;
    }
    const bool clean =
        protocol_error.empty() &&
        (status.ok() || (retired && orphans.empty() &&
                         status.error_code() == grpc::StatusCode::CANCELLED));
    if (!clean && protocol_error.empty() && !Retryable(status.error_code())) {
      // The server refused the work itself; another server would too.
      for (auto& [id, pending] : orphans) {
        pending->promise.set_value(absl::Status(
            FromGrpcStatus(status).code(),
            absl::StrCat("teacher server ", endpoint->address,
                         " ended the stream: ", status.error_message())));
      }
      return;
    }
    if (!clean && endpoint->up) {
      MarkDown(*endpoint,
               protocol_error.empty() ? Describe(status) : protocol_error);
    }
    const std::string reason =
        !protocol_error.empty()
            ? protocol_error
            : (endpoint->last_error.empty() ? Describe(status)
                                            : endpoint->last_error);
    size_t resending = 0;
    for (const auto& [id, pending] : orphans) {
      resending += pending->attempts < options_.max_attempts;
    }
    if (resending > 0) {
      std::fprintf(stderr,
                   "distill: resending %zu batches of teacher server %s to "
                   "the others\n",
                   resending, endpoint->address.c_str());
    }
    for (auto& [id, pending] : orphans) {
      pending->chunks.clear();  // a partial answer from the broken stream
      pending->chunk_bytes = 0;
      if (pending->attempts >= options_.max_attempts) {
        pending->promise.set_value(absl::UnavailableError(absl::StrCat(
            "teacher batch ", id, " was sent ", pending->attempts,
            " times (teacher.max_attempts) without an answer; the last, to ",
            endpoint->address, ", ended with: ", reason)));
        continue;
      }
      ++resent_;
      Dispatch(pending);
    }
  }
}

}  // namespace distill::trainer
