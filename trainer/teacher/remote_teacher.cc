// RemoteTeacher's public face: connecting, shutting down (every stream
// cancelled, every thread joined, every waiting future failed), and the
// TeacherClient calls, which go to Impl.
#include <algorithm>

#include "absl/status/status.h"
#include "common/status.h"
#include "trainer/teacher/internal/remote_state.h"

namespace distill::trainer {

RemoteTeacher::Impl::~Impl() {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& endpoint : endpoints_) {
      for (auto& stream : endpoint->streams) {
        stream->context.TryCancel();
        streams.push_back(stream);
      }
    }
    wake_.SignalAll();
  }
  if (supervisor_.joinable()) supervisor_.join();
  // No stream is opened after shutting_down_: readers stop dispatching.
  // Each writer joins its reader, which ends on the cancel.
  for (auto& stream : streams) {
    if (stream->writer.joinable()) stream->writer.join();
  }
  absl::MutexLock lock(&mu_);
  for (auto& pending : waiting_) {
    pending->promise.set_value(absl::CancelledError("teacher client closed"));
  }
}

RemoteTeacher::RemoteTeacher(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
RemoteTeacher::~RemoteTeacher() = default;

absl::StatusOr<std::unique_ptr<RemoteTeacher>> RemoteTeacher::Connect(
    const RemoteTeacherOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  DISTILL_RETURN_IF_ERROR(impl->Connect());
  return std::unique_ptr<RemoteTeacher>(new RemoteTeacher(std::move(impl)));
}

absl::StatusOr<losses::TeacherTargets> RemoteTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return Submit(batch, temperature).get();
}

TargetsFuture RemoteTeacher::Submit(const data::Batch& batch,
                                    double temperature) {
  return impl_->Submit(batch, temperature);
}

nlohmann::json RemoteTeacher::TakeStats() { return impl_->TakeStats(); }

int64_t RemoteTeacher::num_classes() const {
  return impl_->info().num_classes();
}

std::string RemoteTeacher::description() const { return impl_->description(); }

bool RemoteTeacher::scores_at_indices() const {
  const auto& offered = impl_->info().encodings();
  return impl_->index_top_k() > 0 || std::find(offered.begin(), offered.end(),
                                               v1::INDEX_LOGP) != offered.end();
}

int64_t RemoteTeacher::hidden_size() const { return impl_->hidden_size(); }

std::string RemoteTeacher::model_hash() const {
  return impl_->info().model_hash();
}

}  // namespace distill::trainer
