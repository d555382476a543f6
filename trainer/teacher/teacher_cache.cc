#include "trainer/teacher/internal/teacher_cache.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "student/model.h"
#include "teacher_server/codec.h"

namespace distill::trainer {
namespace {

using Result = absl::StatusOr<losses::TeacherTargets>;

std::string KeyString(const TeacherCacheKey& key) {
  return absl::StrFormat(
      "teacher hash %s, temperature %g, %s%s, %d classes", key.model_hash,
      key.temperature, teacher::EncodingName(key.encoding),
      teacher::IsTopK(key.encoding) ? absl::StrCat(" k=", key.top_k)
      : key.encoding == v1::SAMPLED ? absl::StrCat(" m=", key.samples)
                                    : std::string(),
      key.num_classes);
}

bool SameKey(const TeacherCacheKey& a, const TeacherCacheKey& b) {
  return a.model_hash == b.model_hash && a.temperature == b.temperature &&
         a.encoding == b.encoding && a.top_k == b.top_k &&
         a.samples == b.samples && a.num_classes == b.num_classes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CachingTeacher>> CachingTeacher::Create(
    std::shared_ptr<TeacherClient> inner, const TeacherCacheKey& key,
    int64_t num_samples, const std::string& file) {
  std::unique_ptr<CachingTeacher> cache(
      new CachingTeacher(std::move(inner), key, file));
  DISTILL_RETURN_IF_ERROR(TorchCall("allocating the teacher cache",
                                    [&] { cache->Allocate(num_samples); }));
  if (!file.empty()) DISTILL_RETURN_IF_ERROR(cache->Load());
  return cache;
}

void CachingTeacher::Allocate(int64_t n) {
  const int64_t c = key_.num_classes;
  have_ = torch::zeros({n}, torch::kBool);
  switch (key_.encoding) {
    case v1::DENSE_FP16:
      probs_ = torch::zeros({n, c}, torch::kHalf);
      break;
    case v1::TOP_K:
    case v1::TOP_K_PACKED:
      values_ = torch::zeros({n, key_.top_k}, torch::kHalf);
      indices_ = torch::zeros({n, key_.top_k}, torch::kInt);
      tail_ = torch::zeros({n}, torch::kFloat);
      break;
    case v1::SAMPLED:
      values_ = torch::zeros({n, key_.samples}, torch::kFloat);
      indices_ = torch::zeros({n, key_.samples}, torch::kInt);
      tail_ = torch::zeros({n}, torch::kFloat);
      break;
    default:
      probs_ = torch::zeros({n, c}, torch::kFloat);
  }
}

bool CachingTeacher::AllCached(const torch::Tensor& ids) const {
  if (ids.numel() == 0) return false;
  if (ids.min().item<int64_t>() < 0 ||
      ids.max().item<int64_t>() >= have_.size(0)) {
    return false;
  }
  return have_.index_select(0, ids).all().item<bool>();
}

void CachingTeacher::Insert(const torch::Tensor& ids,
                            const losses::TeacherTargets& targets) {
  if (ids.numel() == 0 || ids.min().item<int64_t>() < 0 ||
      ids.max().item<int64_t>() >= have_.size(0)) {
    return;
  }
  // The table holds probabilities; hidden-state answers (which the config
  // keeps away from caches) are not kept.
  if (targets.form == losses::TeacherTargets::Form::kHidden) return;
  if (targets.form != losses::TeacherTargets::Form::kDense) {
    values_.index_copy_(0, ids, targets.values.to(values_.dtype()));
    indices_.index_copy_(0, ids, targets.indices.to(indices_.dtype()));
    tail_.index_copy_(0, ids, targets.tail_mass.to(tail_.dtype()));
  } else {
    probs_.index_copy_(0, ids, targets.probs.to(probs_.dtype()));
  }
  have_.index_fill_(0, ids, true);
  cached_ = have_.sum().item<int64_t>();
  dirty_ = true;
}

losses::TeacherTargets CachingTeacher::Lookup(const torch::Tensor& ids) const {
  losses::TeacherTargets t;
  t.temperature = key_.temperature;
  t.num_classes = key_.num_classes;
  if (teacher::IsTopK(key_.encoding) || key_.encoding == v1::SAMPLED) {
    t.form = teacher::IsTopK(key_.encoding)
                 ? losses::TeacherTargets::Form::kTopK
                 : losses::TeacherTargets::Form::kSampled;
    t.samples = key_.samples;
    t.values = values_.index_select(0, ids).to(torch::kFloat);
    t.indices = indices_.index_select(0, ids).to(torch::kLong);
    t.tail_mass = tail_.index_select(0, ids);
  } else {
    t.probs = probs_.index_select(0, ids).to(torch::kFloat);
  }
  return t;
}

absl::StatusOr<losses::TeacherTargets> CachingTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return Submit(batch, temperature).get();
}

TargetsFuture CachingTeacher::Submit(const data::Batch& batch,
                                     double temperature) {
  // Targets at a batch's own class ids are not the table's.
  const bool cacheable =
      temperature == key_.temperature && !batch.teacher_indices.defined();
  if (cacheable && AllCached(batch.ids)) {
    hits_ += batch.ids.numel();
    std::promise<Result> done;
    done.set_value(Lookup(batch.ids));
    return done.get_future();
  }
  TargetsFuture answer = inner_->Submit(batch, temperature);
  if (!cacheable) return answer;
  // Deferred: runs in the thread that reads the future, so the tables are
  // only touched by the training loop.
  return std::async(
      std::launch::deferred,
      [this, ids = batch.ids, answer = std::move(answer)]() mutable {
        Result result = answer.get();
        if (result.ok()) Insert(ids, *result);
        return result;
      });
}

nlohmann::json CachingTeacher::TakeStats() {
  nlohmann::json stats = inner_->TakeStats();
  stats["teacher_cache_hits"] = hits_;
  hits_ = 0;
  return stats;
}

absl::Status CachingTeacher::EpochDone() {
  DISTILL_RETURN_IF_ERROR(inner_->EpochDone());
  if (file_.empty() || !dirty_) return absl::OkStatus();
  DISTILL_RETURN_IF_ERROR(Save());
  dirty_ = false;
  return absl::OkStatus();
}

std::string CachingTeacher::description() const {
  return absl::StrCat(inner_->description(), ", targets cached ",
                      file_.empty() ? "in memory" : "in " + file_);
}

// The file: length-delimited teacher.proto messages — InfoResponse
// (model_hash, num_classes) and StreamHeader (temperature, encoding, top_k,
// samples)
// as the key, then the ids (Tensor, INT64) and their SoftTargets.
absl::Status CachingTeacher::Save() const {
  const torch::Tensor ids = have_.nonzero().view({-1});
  DISTILL_ASSIGN_OR_RETURN(v1::SoftTargets targets,
                           teacher::EncodeTargets(Lookup(ids), key_.encoding));
  v1::InfoResponse info;
  info.set_model_hash(key_.model_hash);
  info.set_num_classes(key_.num_classes);
  v1::StreamHeader header;
  header.set_temperature(key_.temperature);
  header.set_encoding(key_.encoding);
  header.set_top_k(key_.top_k);
  header.set_samples(key_.samples);
  const v1::Tensor id_tensor = teacher::ToProto(ids, v1::Tensor::INT64);
  std::error_code error;
  std::filesystem::create_directories(
      std::filesystem::path(file_).parent_path(), error);
  return WriteFileAtomically(file_, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    using google::protobuf::util::SerializeDelimitedToOstream;
    if (!out || !SerializeDelimitedToOstream(info, &out) ||
        !SerializeDelimitedToOstream(header, &out) ||
        !SerializeDelimitedToOstream(id_tensor, &out) ||
        !SerializeDelimitedToOstream(targets, &out) || !out.flush()) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write the teacher cache ", tmp));
    }
    return absl::OkStatus();
  });
}

absl::Status CachingTeacher::Load() {
  std::ifstream in(file_, std::ios::binary);
  if (!in) return absl::OkStatus();  // No cache yet.
  auto discard = [&](const std::string& why) {
    std::fprintf(stderr, "distill: discarding teacher cache %s: %s\n",
                 file_.c_str(), why.c_str());
    return absl::OkStatus();
  };
  google::protobuf::io::IstreamInputStream stream(&in);
  v1::InfoResponse info;
  v1::StreamHeader header;
  v1::Tensor id_tensor;
  v1::SoftTargets targets;
  using google::protobuf::util::ParseDelimitedFromZeroCopyStream;
  if (!ParseDelimitedFromZeroCopyStream(&info, &stream, nullptr) ||
      !ParseDelimitedFromZeroCopyStream(&header, &stream, nullptr) ||
      !ParseDelimitedFromZeroCopyStream(&id_tensor, &stream, nullptr) ||
      !ParseDelimitedFromZeroCopyStream(&targets, &stream, nullptr)) {
    return discard("it cannot be parsed");
  }
  TeacherCacheKey stored;
  stored.model_hash = info.model_hash();
  stored.num_classes = info.num_classes();
  stored.temperature = header.temperature();
  stored.encoding = header.encoding();
  stored.top_k = header.top_k();
  stored.samples = header.samples();
  if (!SameKey(stored, key_)) {
    return discard(absl::StrCat("it was made for ", KeyString(stored),
                                "; this run uses ", KeyString(key_)));
  }
  auto ids = teacher::FromProto(id_tensor, "ids");
  if (!ids.ok() || ids->dim() != 1 || ids->scalar_type() != torch::kLong) {
    return discard("its sample ids are malformed");
  }
  auto decoded = teacher::DecodeTargets(targets, ids->size(0));
  if (!decoded.ok()) return discard(std::string(decoded.status().message()));
  if (ids->numel() > 0 && (ids->min().item<int64_t>() < 0 ||
                           ids->max().item<int64_t>() >= have_.size(0))) {
    return discard("it holds sample ids outside this run's data");
  }
  DISTILL_RETURN_IF_ERROR(
      TorchCall("loading the teacher cache", [&] { Insert(*ids, *decoded); }));
  dirty_ = false;
  return absl::OkStatus();
}

}  // namespace distill::trainer
