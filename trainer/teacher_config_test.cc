// The job config's `teacher` section for teacher servers: defaults, and one
// exact message (with the field's line) for every bad value.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/testing/status_matchers.h"
#include "trainer/config.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;

constexpr char kHead[] = R"pb(mode: DISTILL
run_dir: "/tmp/x"
student { arch: "mlp" }
)pb";

// Parses kHead followed by `rest`; the teacher section starts on line 4.
absl::StatusOr<JobConfig> Parse(const std::string& rest) {
  return ParseJobConfig(std::string(kHead) + rest, "job.pbtxt");
}

void ExpectError(const std::string& rest, const std::string& message) {
  EXPECT_THAT(Parse(rest),
              StatusIs(absl::StatusCode::kInvalidArgument, message))
      << rest;
}

TEST(TeacherConfigTest, RemoteTeacherGetsDocumentedDefaults) {
  auto c = Parse("teacher { endpoints: \"127.0.0.1:5001\" }\n");
  ASSERT_THAT(c, IsOk());
  EXPECT_TRUE(IsRemoteTeacher(c->teacher()));
  EXPECT_EQ(c->teacher().encoding(), v1::TeacherConfig::DENSE_FP32);
  EXPECT_EQ(c->teacher().prefetch_batches(), 4);
  EXPECT_EQ(c->teacher().connect_timeout_seconds(), 10);
  EXPECT_EQ(c->teacher().failover_grace_seconds(), 30);
  EXPECT_EQ(c->teacher().answer_timeout_seconds(), 60);
  EXPECT_EQ(c->teacher().max_attempts(), 5);
  EXPECT_EQ(c->teacher().max_answer_bytes(), 4 << 20);
  EXPECT_EQ(c->teacher().cache().mode(),
            v1::TeacherCacheConfig::MODE_UNSPECIFIED);

  auto registry = Parse(
      "teacher { registry_dir: \"reg\" encoding: TOP_K top_k: 8\n"
      "  cache { mode: DISK } }\n");
  ASSERT_THAT(registry, IsOk());
  EXPECT_TRUE(IsRemoteTeacher(registry->teacher()));
  EXPECT_EQ(registry->teacher().top_k(), 8);

  auto local = Parse("teacher { model { arch: \"mlp\" weights: \"t.pt\" } }\n");
  ASSERT_THAT(local, IsOk());
  EXPECT_FALSE(IsRemoteTeacher(local->teacher()));
}

TEST(TeacherConfigTest, ModelAndServersAreExclusive) {
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  model { arch: \"mlp\" }\n}\n",
              "job.pbtxt:6: teacher.model must be unset when "
              "teacher.endpoints or teacher.registry_dir name teacher servers "
              "(the servers load the model)");
  ExpectError("teacher { prefetch_batches: 2 }\n",
              "job.pbtxt:4: teacher needs `model` (run in this process), "
              "`endpoints`/`registry_dir` (teacher servers) or `store_dir` "
              "(a target store)");
}

// A token job whose teacher section is `teacher` and `rest` after it.
absl::StatusOr<JobConfig> ParseTokens(const std::string& teacher,
                                      const std::string& rest = "") {
  return ParseJobConfig(
      "mode: DISTILL\nrun_dir: \"/tmp/x\"\nstudent { arch: \"gpt\" }\n"
      "data { dataset: \"tokens\" dir: \"d\" seq_len: 32 }\nteacher { " +
          teacher + " }\n" + rest,
      "job.pbtxt");
}

TEST(TeacherConfigTest, TargetStoreTakesAnEncodingWithOrWithoutAModel) {
  // Alone: runs read the store.
  auto alone = ParseTokens("store_dir: \"s\"");
  ASSERT_THAT(alone, IsOk());
  EXPECT_EQ(alone->teacher().encoding(), v1::TeacherConfig::DENSE_FP32);
  // Beside the model that writes it, with the encoding it is written in.
  auto writer = ParseTokens(
      "model { arch: \"gpt\" weights: \"t.pt\" } store_dir: \"s\" "
      "encoding: TOP_K_PACKED top_k: 128");
  ASSERT_THAT(writer, IsOk());
  EXPECT_EQ(writer->teacher().top_k(), 128);
  // Without a store the in-process teacher takes no encoding.
  EXPECT_THAT(ParseTokens("model { arch: \"gpt\" weights: \"t.pt\" } "
                          "encoding: TOP_K top_k: 4"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr(
                           "teacher.encoding applies to teacher servers")));
  EXPECT_THAT(ParseTokens("store_dir: \"s\" encoding: TOP_K"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("teacher.top_k must be")));
}

TEST(TeacherConfigTest, TargetStoreNeedsTokensAndOneTemperature) {
  EXPECT_THAT(
      Parse("teacher { store_dir: \"s\" }\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::HasSubstr(
                   "teacher.store_dir applies to token data (data.dataset "
                   "\"tokens\"); image jobs reuse targets with "
                   "teacher.cache")));
  EXPECT_THAT(
      ParseTokens("store_dir: \"s\"",
                  "temperature_schedule { type: LINEAR start: 4 end: 1 }\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::HasSubstr("teacher.store_dir needs a constant "
                                    "temperature")));
}

TEST(TeacherConfigTest, HiddenStatesComeFromServersOfLanguageModels) {
  auto served =
      ParseTokens("endpoints: \"127.0.0.1:5001\" encoding: HIDDEN_FP16");
  ASSERT_THAT(served, IsOk());
  EXPECT_EQ(served->teacher().encoding(), v1::TeacherConfig::HIDDEN_FP16);
  const std::string wanted =
      "teacher.encoding HIDDEN_FP16 applies to language models "
      "(data.dataset \"tokens\") served by teacher servers";
  EXPECT_THAT(
      Parse("teacher { endpoints: \"127.0.0.1:5001\" encoding: HIDDEN_FP16 "
            "}\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::HasSubstr(wanted)));
  EXPECT_THAT(ParseTokens("model { arch: \"gpt\" weights: \"t.pt\" } "
                          "store_dir: \"s\" encoding: HIDDEN_FP16"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr(wanted)));
  // A store of hidden states is written through servers, then read alone.
  EXPECT_THAT(ParseTokens("endpoints: \"127.0.0.1:5001\" store_dir: \"s\" "
                          "encoding: HIDDEN_FP16"),
              IsOk());
  EXPECT_THAT(ParseTokens("store_dir: \"s\" encoding: HIDDEN_FP16"), IsOk());
}

TEST(TeacherConfigTest, EnsembleMembersAreCheckedAndInProcessOnly) {
  auto ok = Parse(
      "teacher {\n  model { arch: \"mlp\" weights: \"a.pt\" }\n"
      "  ensemble { arch: \"cnn_teacher\" weights: \"b.pt\" }\n}\n");
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->teacher().ensemble_size(), 1);
  ExpectError(
      "teacher {\n  model { arch: \"mlp\" weights: \"a.pt\" }\n"
      "  ensemble { arch: \"mlp\" weights: \"b.pt\" }\n"
      "  ensemble { arch: \"mlp\" }\n}\n",
      "job.pbtxt:7: teacher.ensemble[1].weights is required: a teacher built "
      "from the zoo needs trained weights (the model.pt of a TRAIN run)");
  ExpectError(
      "teacher {\n  model { arch: \"mlp\" weights: \"a.pt\" }\n"
      "  ensemble { arch: \"resnet\" weights: \"b.pt\" }\n}\n",
      "job.pbtxt:6: teacher.ensemble[0].arch 'resnet' is not a known "
      "architecture; known: cnn_student, cnn_teacher, gpt, mlp");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n"
      "  ensemble { arch: \"mlp\" weights: \"b.pt\" }\n}\n",
      "job.pbtxt:6: teacher.ensemble applies to in-process teachers only "
      "(teacher.model); teacher servers each serve one model");
}

TEST(TeacherConfigTest, EndpointsMustBeHostPortOnce) {
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  endpoints: \"nohost\"\n}\n",
              "job.pbtxt:6: teacher.endpoints[1] must be host:port with a "
              "port in [1, 65535] (got 'nohost')");
  ExpectError("teacher { endpoints: \"h:70000\" }\n",
              "job.pbtxt:4: teacher.endpoints[0] must be host:port with a "
              "port in [1, 65535] (got 'h:70000')");
  ExpectError("teacher { endpoints: \"h:1\" endpoints: \"h:1\" }\n",
              "job.pbtxt:4: teacher.endpoints[1] 'h:1' is listed twice");
}

TEST(TeacherConfigTest, TopKGoesWithItsEncoding) {
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  encoding: TOP_K\n}\n",
              "job.pbtxt:4: teacher.top_k must be >= 1 with encoding TOP_K "
              "(got 0)");
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  top_k: 4\n}\n",
              "job.pbtxt:6: teacher.top_k applies to encodings TOP_K and "
              "TOP_K_PACKED only");
}

TEST(TeacherConfigTest, SamplesGoWithTheirEncodingAndLinearLosses) {
  EXPECT_THAT(Parse("teacher { endpoints: \"h:1\" encoding: SAMPLED "
                    "samples: 12 }\n"),
              IsOk());
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  encoding: SAMPLED\n}\n",
              "job.pbtxt:4: teacher.samples must be in [1, 255] with encoding "
              "SAMPLED (got 0)");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  encoding: SAMPLED\n"
      "  samples: 256\n}\n",
      "job.pbtxt:7: teacher.samples must be in [1, 255] with encoding "
      "SAMPLED (got 256)");
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  samples: 4\n}\n",
              "job.pbtxt:6: teacher.samples applies to encoding SAMPLED only");
  ExpectError(
      "teacher { endpoints: \"h:1\" encoding: SAMPLED samples: 12 }\n"
      "loss { name: \"kd_kl\" }\nloss { name: \"reverse_kl\" }\n",
      "job.pbtxt:6: loss[1] reverse_kl is not linear in the teacher's "
      "probabilities, so teacher.encoding SAMPLED would bias it; use kd_kl "
      "or soft_ce, or DENSE/TOP_K targets");
  // generalized_jsd is linear only at beta = 0 (forward KL).
  EXPECT_THAT(
      Parse("teacher { endpoints: \"h:1\" encoding: SAMPLED samples: 12 }\n"
            "loss { name: \"generalized_jsd\" params { key: \"beta\" "
            "value: 0 } }\n"),
      IsOk());
  ExpectError(
      "teacher { endpoints: \"h:1\" encoding: SAMPLED samples: 12 }\n"
      "loss { name: \"generalized_jsd\" }\n",
      "job.pbtxt:5: loss[0] generalized_jsd is not linear in the teacher's "
      "probabilities, so teacher.encoding SAMPLED would bias it; use kd_kl "
      "or soft_ce, or DENSE/TOP_K targets");
}

TEST(TeacherConfigTest, NumbersAreBounded) {
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  prefetch_batches: -1\n}\n",
              "job.pbtxt:6: teacher.prefetch_batches must be in [0, 64] (got "
              "-1)");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  connect_timeout_seconds: 0\n}\n",
      "job.pbtxt:6: teacher.connect_timeout_seconds must be in (0, 31536000] "
      "(got 0)");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  failover_grace_seconds: -2\n}\n",
      "job.pbtxt:6: teacher.failover_grace_seconds must be in (0, 31536000] "
      "(got -2)");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  answer_timeout_seconds: 0\n}\n",
      "job.pbtxt:6: teacher.answer_timeout_seconds must be in (0, 31536000] "
      "(got 0)");
  ExpectError("teacher {\n  endpoints: \"h:1\"\n  max_attempts: 0\n}\n",
              "job.pbtxt:6: teacher.max_attempts must be in [1, 100] (got 0)");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  max_answer_bytes: 65535\n}\n",
      "job.pbtxt:6: teacher.max_answer_bytes must be >= 65536 (got 65535)");
}

TEST(TeacherConfigTest, ServerOnlyFieldsNeedServers) {
  const std::string model = "  model { arch: \"mlp\" weights: \"t.pt\" }\n";
  const std::string suffix =
      " applies to teacher servers only (set teacher.endpoints or "
      "teacher.registry_dir)";
  ExpectError("teacher {\n" + model + "  encoding: DENSE_FP16\n}\n",
              "job.pbtxt:6: teacher.encoding" + suffix);
  ExpectError("teacher {\n" + model + "  token_file: \"t\"\n}\n",
              "job.pbtxt:6: teacher.token_file" + suffix);
  ExpectError("teacher {\n" + model + "  tls_ca_file: \"ca.pem\"\n}\n",
              "job.pbtxt:6: teacher.tls_ca_file" + suffix);
  ExpectError("teacher {\n" + model + "  cache { mode: MEMORY }\n}\n",
              "job.pbtxt:6: teacher.cache.mode" + suffix);
  ExpectError("teacher {\n" + model + "  max_answer_bytes: 1048576\n}\n",
              "job.pbtxt:6: teacher.max_answer_bytes" + suffix);
  ExpectError("teacher {\n" + model + "  samples: 12\n}\n",
              "job.pbtxt:6: teacher.samples" + suffix);
}

TEST(TeacherConfigTest, CacheNeedsDeterministicTargets) {
  ExpectError(
      "data { augment { enabled: true } }\n"
      "teacher {\n  endpoints: \"h:1\"\n  cache { mode: MEMORY }\n}\n",
      "job.pbtxt:7: teacher.cache.mode needs data.augment.enabled false: "
      "augmented inputs get new targets every epoch");
  ExpectError(
      "temperature_schedule { type: LINEAR start: 4 end: 1 }\n"
      "teacher {\n  endpoints: \"h:1\"\n  cache { mode: DISK }\n}\n",
      "job.pbtxt:7: teacher.cache.mode needs a constant temperature: "
      "temperature_schedule changes the targets every step");
  ExpectError(
      "teacher {\n  endpoints: \"h:1\"\n  cache {\n    mode: MEMORY\n"
      "    dir: \"c\"\n  }\n}\n",
      "job.pbtxt:8: teacher.cache.dir applies to cache mode DISK only");
}

// A language-model DISTILL job from line 1; `on_policy` begins on line 5.
absl::StatusOr<JobConfig> ParseLm(const std::string& teacher,
                                  const std::string& rest,
                                  const std::string& mode = "DISTILL") {
  return ParseJobConfig(
      "mode: " + mode +
          " run_dir: \"/tmp/x\"\n"
          "data { dataset: \"tokens\" dir: \"d\" seq_len: 32 }\n"
          "student { arch: \"gpt\" }\n" +
          teacher + "\n" + rest,
      "job.pbtxt");
}

constexpr char kServers[] = "teacher { endpoints: \"h:1\" }";
constexpr char kInProcess[] =
    "teacher { model { arch: \"gpt\" weights: \"t.pt\" } }";

TEST(OnPolicyConfigTest, GetsDocumentedDefaults) {
  auto c = ParseLm(kServers, "on_policy { }\n");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->on_policy().fraction(), 0.5);
  EXPECT_EQ(c->on_policy().prompt_tokens(), 8);  // seq_len / 4
  EXPECT_EQ(c->on_policy().temperature(), 1.0);
  EXPECT_EQ(c->on_policy().top_p(), 1.0);
  EXPECT_EQ(c->on_policy().stop_id(), -1);
  EXPECT_EQ(c->on_policy().new_tokens(), 25);  // 32 + 1 - 8
  EXPECT_TRUE(c->on_policy().overlap());
  EXPECT_EQ(c->on_policy().student_top_k(), 0);
  auto local = ParseLm(kInProcess, "on_policy { fraction: 1 }\n");
  ASSERT_THAT(local, IsOk());
  EXPECT_FALSE(local->on_policy().overlap());
  EXPECT_FALSE(ParseLm(kServers, "")->has_on_policy());
}

TEST(OnPolicyConfigTest, EveryBadValueIsNamed) {
  const auto expect = [](const absl::StatusOr<JobConfig>& c,
                         const std::string& message) {
    EXPECT_THAT(c, StatusIs(absl::StatusCode::kInvalidArgument, message));
  };
  expect(ParseLm(kServers, "on_policy { fraction: 1.5 }\n"),
         "job.pbtxt:5: on_policy.fraction must be in [0, 1] (got 1.5)");
  expect(ParseLm(kServers, "on_policy { prompt_tokens: 32 }\n"),
         "job.pbtxt:5: on_policy.prompt_tokens must be in [1, 31] "
         "(data.seq_len - 1 at most) (got 32)");
  expect(ParseLm(kServers, "on_policy { prompt_tokens: 30 new_tokens: 4 }\n"),
         "job.pbtxt:5: on_policy.new_tokens must be in [1, 3] (data.seq_len "
         "+ 1 - on_policy.prompt_tokens at most) (got 4)");
  expect(ParseLm(kServers, "on_policy { temperature: -1 }\n"),
         "job.pbtxt:5: on_policy.temperature must be >= 0 (got -1)");
  expect(ParseLm(kServers, "on_policy { top_p: 0 }\n"),
         "job.pbtxt:5: on_policy.top_p must be in (0, 1] (got 0)");
  expect(ParseLm(kServers, "on_policy { stop_id: -2 }\n"),
         "job.pbtxt:5: on_policy.stop_id must be >= -1 (got -2)");
  expect(ParseLm(kServers, "on_policy { student_top_k: -1 }\n"),
         "job.pbtxt:5: on_policy.student_top_k must be >= 0 (got -1)");
  expect(ParseLm(kServers,
                 "on_policy { student_top_k: 8 }\nloss { name: \"dkd\" }\n"),
         "job.pbtxt:5: on_policy.student_top_k gives the teacher's "
         "probabilities at the student's ids only, and loss dkd needs all of "
         "them (dense)");
  expect(ParseLm(kInProcess, "on_policy { overlap: true }\n"),
         "job.pbtxt:5: on_policy.overlap needs teacher servers: an in-process "
         "teacher scores on the trainer's own thread, so there is nothing to "
         "overlap");
  expect(ParseLm(kServers, "on_policy { }\nloss { name: \"hard_ce\" }\n"),
         "job.pbtxt:5: on_policy needs a loss term that reads the teacher "
         "(on-policy steps train on those terms only)");
  expect(ParseLm("teacher { store_dir: \"s\" }", "on_policy { }\n"),
         "job.pbtxt:5: on_policy needs a teacher in process or on servers: a "
         "target store holds targets for the data's own windows only");
  expect(ParseLm("", "on_policy { }\n", "TRAIN"),
         "job.pbtxt:5: on_policy applies to mode DISTILL only");
  EXPECT_THAT(
      Parse("teacher { endpoints: \"h:1\" }\non_policy { }\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::HasSubstr("on_policy needs a language model")));
}

}  // namespace
}  // namespace distill::trainer
