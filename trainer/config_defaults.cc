// ApplyDefaults: the one place the job config's defaults are written in
// code; proto/job.proto documents each beside its field.
#include <algorithm>
#include <cstdint>

#include "trainer/config.h"

namespace distill::trainer {

using ::distill::v1::OptimizerConfig;
using ::distill::v1::ScheduleConfig;
using ::distill::v1::TeacherCacheConfig;
using ::distill::v1::TeacherConfig;

void ApplyDefaults(JobConfig& c) {
  if (!c.has_temperature()) c.set_temperature(4.0);
  if (!c.has_epochs()) c.set_epochs(1);
  if (!c.has_batch_size()) c.set_batch_size(128);
  if (!c.has_eval_every_epochs()) c.set_eval_every_epochs(1);
  if (!c.has_checkpoint_every_epochs()) c.set_checkpoint_every_epochs(1);
  if (!c.has_keep_checkpoints()) c.set_keep_checkpoints(2);
  if (!c.has_log_every_steps()) c.set_log_every_steps(50);
  if (!c.has_micro_batches()) c.set_micro_batches(1);
  if (!c.has_loss_chunk_tokens()) c.set_loss_chunk_tokens(512);
  auto* dist = c.mutable_distributed();
  if (dist->backend().empty()) dist->set_backend("gloo");
  if (!dist->has_collective_timeout_seconds()) {
    dist->set_collective_timeout_seconds(300);
  }
  if (!dist->has_first_bucket_mb()) dist->set_first_bucket_mb(1);
  if (!dist->has_bucket_cap_mb()) dist->set_bucket_cap_mb(25);
  if (!dist->has_overlap()) dist->set_overlap(true);

  auto* data = c.mutable_data();
  if (data->dataset().empty()) data->set_dataset("fashion_mnist");
  if (data->dir().empty() && data->dataset() == "fashion_mnist") {
    data->set_dir("/usr/share/datasets/fashion-mnist");
  }
  if (data->dataset() == "tokens") {
    if (!data->has_seq_len()) data->set_seq_len(128);
    if (!data->has_stride()) data->set_stride(data->seq_len());
  }
  if (!data->has_loader_queue_depth()) data->set_loader_queue_depth(4);
  auto* aug = data->mutable_augment();
  if (!aug->has_crop_padding()) aug->set_crop_padding(2);
  if (!aug->has_horizontal_flip()) aug->set_horizontal_flip(true);

  if (c.loss_size() == 0 && HasTeacher(c)) {
    auto* kd = c.add_loss();
    kd->set_name("kd_kl");
    kd->set_weight(0.9);
    auto* ce = c.add_loss();
    ce->set_name("hard_ce");
    ce->set_weight(0.1);
  } else if (c.loss_size() == 0) {
    c.add_loss()->set_name("hard_ce");
  }
  for (auto& term : *c.mutable_loss()) {
    if (!term.has_weight()) term.set_weight(1.0);
  }

  auto* opt = c.mutable_optimizer();
  if (opt->type() == OptimizerConfig::TYPE_UNSPECIFIED) {
    opt->set_type(OptimizerConfig::SGD);
  }
  const bool sgd = opt->type() == OptimizerConfig::SGD;
  if (!opt->has_lr()) opt->set_lr(sgd ? 0.1 : 0.001);
  if (!opt->has_momentum()) opt->set_momentum(0.9);
  if (!opt->has_weight_decay()) {
    opt->set_weight_decay(sgd                                     ? 5e-4
                          : opt->type() == OptimizerConfig::ADAMW ? 0.01
                                                                  : 0.0);
  }
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(0.999);
  if (!opt->has_eps()) opt->set_eps(1e-8);

  if (c.has_on_policy()) {
    auto* o = c.mutable_on_policy();
    if (!o->has_fraction()) o->set_fraction(0.5);
    if (!o->has_prompt_tokens()) {
      o->set_prompt_tokens(std::max<int64_t>(1, c.data().seq_len() / 4));
    }
    if (!o->has_temperature()) o->set_temperature(1.0);
    if (!o->has_top_p()) o->set_top_p(1.0);
    if (!o->has_stop_id()) o->set_stop_id(-1);
    if (!o->has_new_tokens()) {
      o->set_new_tokens(c.data().seq_len() + 1 - o->prompt_tokens());
    }
    if (!o->has_overlap()) {
      o->set_overlap(c.has_teacher() && IsRemoteTeacher(c.teacher()));
    }
  }

  if (c.has_teacher()) {
    auto* t = c.mutable_teacher();
    if (!t->has_prefetch_batches()) t->set_prefetch_batches(4);
    if (!t->has_connect_timeout_seconds()) t->set_connect_timeout_seconds(10);
    if (!t->has_failover_grace_seconds()) t->set_failover_grace_seconds(30);
    if (!t->has_answer_timeout_seconds()) t->set_answer_timeout_seconds(60);
    if (!t->has_max_attempts()) t->set_max_attempts(5);
    if ((IsRemoteTeacher(*t) || !t->store_dir().empty()) &&
        t->encoding() == TeacherConfig::ENCODING_UNSPECIFIED) {
      t->set_encoding(TeacherConfig::DENSE_FP32);
    }
    if (IsRemoteTeacher(*t) && !t->has_max_answer_bytes()) {
      t->set_max_answer_bytes(4 << 20);
    }
    if (t->has_cache() &&
        t->cache().mode() == TeacherCacheConfig::MODE_UNSPECIFIED) {
      t->mutable_cache()->set_mode(TeacherCacheConfig::NONE);
    }
  }
  if (c.has_qat()) {
    auto* q = c.mutable_qat();
    if (!q->has_calibration_batches()) q->set_calibration_batches(32);
    if (!q->has_epochs()) q->set_epochs(1);
    if (!q->has_lr()) q->set_lr(opt->lr() / 10);
    if (q->observer() == v1::QatConfig::OBSERVER_UNSPECIFIED) {
      q->set_observer(v1::QatConfig::MINMAX);
    }
    if (!q->has_percentile()) q->set_percentile(99.99);
    if (!q->has_averaging_constant()) q->set_averaging_constant(0.01);
    if (!q->has_freeze_observers_after_epochs()) {
      q->set_freeze_observers_after_epochs(0.75 * q->epochs());
    }
    if (!q->has_freeze_bn_after_epochs()) {
      q->set_freeze_bn_after_epochs(0.5 * q->epochs());
    }
    if (!q->has_teacher_guided()) q->set_teacher_guided(HasTeacher(c));
    if (!q->has_group_size()) q->set_group_size(32);
    if (!q->has_group_zero_points()) q->set_group_zero_points(false);
    if (!q->has_awq_rows()) q->set_awq_rows(4096);
  }

  auto* s = c.mutable_lr_schedule();
  if (s->type() == ScheduleConfig::TYPE_UNSPECIFIED) {
    s->set_type(ScheduleConfig::CONSTANT);
  }
  if (!s->has_step_epochs()) s->set_step_epochs(1);
  if (!s->has_gamma()) s->set_gamma(0.1);
}
}  // namespace distill::trainer
