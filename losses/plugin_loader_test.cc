#include "losses/plugin_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/testing/status_matchers.h"
#include "losses/plugin.h"
#include "losses/registry.h"
#include "losses/teacher_targets.h"

namespace distill::losses {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kCosineKd = DISTILL_COSINE_KD_PLUGIN;

// One row: teacher p = (0.5, 0.5); student logits (T log 4, 0) give
// q = softmax(z / T) = (0.8, 0.2) at any T.
struct Example {
  torch::Tensor logits;
  TeacherTargets teacher;
};

Example OneRow(double temperature) {
  Example e;
  e.logits = torch::tensor({{temperature * std::log(4.0), 0.0}});
  e.teacher.form = TeacherTargets::Form::kDense;
  e.teacher.temperature = temperature;
  e.teacher.num_classes = 2;
  e.teacher.probs = torch::tensor({{0.5, 0.5}});
  return e;
}

TEST(PluginLoaderTest, ExamplePluginComputesCosineDistance) {
  LossRegistry registry;
  ASSERT_THAT(LoadLossPlugin(kCosineKd, registry), IsOk());
  EXPECT_THAT(registry.Names(), ElementsAre("cosine_kd"));
  auto entry = registry.Find("cosine_kd");
  ASSERT_THAT(entry, IsOk());
  EXPECT_TRUE(entry->needs_teacher);
  ASSERT_EQ(entry->params.size(), 1u);
  EXPECT_EQ(entry->params[0].name, "eps");

  auto loss = registry.Create("cosine_kd", {});
  ASSERT_THAT(loss, IsOk());
  Example e = OneRow(2.0);
  LossInputs inputs;
  inputs.student_logits = e.logits;
  inputs.teacher = &e.teacher;
  auto value = (*loss)->Compute(inputs);
  ASSERT_THAT(value, IsOk());
  // p.q = 0.4 + 0.1 = 0.5; |p| = sqrt(0.5); |q| = sqrt(0.68).
  const double expected = 1.0 - 0.5 / (std::sqrt(0.5) * std::sqrt(0.68));
  EXPECT_NEAR(value->item<double>(), expected, 1e-6);
  EXPECT_NEAR(expected, 0.142507, 1e-6);

  // The declared parameter reaches the loss: eps = 1 floors |p||q| ~ 0.583
  // at 1, so the similarity is p.q = 0.5.
  auto floored = registry.Create("cosine_kd", {{"eps", 1.0}});
  ASSERT_THAT(floored, IsOk());
  auto floored_value = (*floored)->Compute(inputs);
  ASSERT_THAT(floored_value, IsOk());
  EXPECT_NEAR(floored_value->item<double>(), 0.5, 1e-6);
}

TEST(PluginLoaderTest, PluginLossGetsGradientsAndRefusesTopK) {
  LossRegistry registry;
  ASSERT_THAT(LoadLossPlugin(kCosineKd, registry), IsOk());
  auto loss = registry.Create("cosine_kd", {});
  ASSERT_THAT(loss, IsOk());
  Example e = OneRow(1.0);
  e.logits.requires_grad_(true);
  LossInputs inputs;
  inputs.student_logits = e.logits;
  inputs.teacher = &e.teacher;
  auto value = (*loss)->Compute(inputs);
  ASSERT_THAT(value, IsOk());
  value->backward();
  ASSERT_TRUE(e.logits.grad().defined());
  // Moving q towards p (lowering the first logit) lowers the loss.
  EXPECT_GT(e.logits.grad()[0][0].item<double>(), 0.0);

  TeacherTargets top_k =
      TeacherTargets::TopKFromLogits(torch::tensor({{1.0, 0.0}}), 1.0, 1);
  inputs.teacher = &top_k;
  EXPECT_THAT((*loss)->Compute(inputs),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("cosine_kd needs dense teacher targets")));
  inputs.teacher = nullptr;
  EXPECT_THAT((*loss)->Compute(inputs),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("cosine_kd needs teacher targets")));
}

TEST(PluginLoaderTest, PluginParametersAreCheckedLikeBuiltIns) {
  LossRegistry registry;
  ASSERT_THAT(LoadLossPlugin(kCosineKd, registry), IsOk());
  EXPECT_THAT(registry.Create("cosine_kd", {{"epsilon", 0.1}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'cosine_kd' has no parameter "
                                 "'epsilon'; its parameters: eps")));
  EXPECT_THAT(registry.Create("cosine_kd", {{"eps", 2.0}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'cosine_kd' parameter 'eps' = 2 is "
                                 "outside [0, 1]")));
}

TEST(PluginLoaderTest, MissingFile) {
  LossRegistry registry;
  EXPECT_THAT(LoadLossPlugin("/nonexistent/libnothing.so", registry),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("loss plugin not found: "
                                 "/nonexistent/libnothing.so")));
}

TEST(PluginLoaderTest, FileThatIsNotALibrary) {
  LossRegistry registry;
  const std::string path = std::string(::testing::TempDir()) + "/garbage.so";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not an ELF file", f);
    std::fclose(f);
  }
  EXPECT_THAT(
      LoadLossPlugin(path, registry),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "cannot load loss plugin " + path + ": not an ELF file"));
}

// The example plugin with its section headers' offset made to point 1 TB
// past the end of the file: refused from the file, nothing loaded.
TEST(PluginLoaderTest, LibraryWhoseHeaderLiesIsRefused) {
  LossRegistry registry;
  const std::string path = std::string(::testing::TempDir()) + "/lying.so";
  std::filesystem::copy_file(kCosineKd, path,
                             std::filesystem::copy_options::overwrite_existing);
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const uint64_t far = uint64_t{1} << 40;
    ASSERT_EQ(std::fseek(f, 0x28, SEEK_SET), 0);  // e_shoff of ELF64
    ASSERT_EQ(std::fwrite(&far, sizeof(far), 1, f), 1u);
    std::fclose(f);
  }
  EXPECT_THAT(LoadLossPlugin(path, registry),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot load loss plugin " + path +
                                 ": its header places the section table at "
                                 "byte 1099511627776, past the end of the "
                                 "file (")));
  EXPECT_TRUE(registry.Names().empty());
}

// A plugin-mark section of 3 bytes: refused from the file. The library
// aborts when loaded, so reaching the check proves it was not.
TEST(PluginLoaderTest, DamagedMarkIsRefusedBeforeLoading) {
  LossRegistry registry;
  const std::string path = DISTILL_BAD_MARK_PLUGIN;
  EXPECT_THAT(LoadLossPlugin(path, registry),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cannot load loss plugin " + path +
                           ": its .distill_plugin section holds 3 bytes, not "
                           "one plugin mark (12)"));
  EXPECT_TRUE(registry.Names().empty());
}

TEST(PluginLoaderTest, LibraryWithoutEntryIsNotAPlugin) {
  LossRegistry registry;
  const std::string path = DISTILL_NOT_A_PLUGIN;
  EXPECT_THAT(
      LoadLossPlugin(path, registry),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(path + " is not a distill loss plugin: it has no "
                                ".distill_plugin section")));
  EXPECT_TRUE(registry.Names().empty());
}

// Its mark says version 999, and it aborts when loaded (a static
// constructor): before, dlopen ran that constructor before the version was
// read, and the process died. Now it is refused from the file.
TEST(PluginLoaderTest, OtherApiVersionIsRefused) {
  LossRegistry registry;
  const std::string path = DISTILL_WRONG_VERSION_PLUGIN;
  EXPECT_THAT(
      LoadLossPlugin(path, registry),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("loss plugin " + path +
                         " was built for plugin API version 999 but this "
                         "distill has version " +
                         std::to_string(kDistillLossPluginApiVersion))));
  EXPECT_TRUE(registry.Names().empty());
}

// An entry function that throws: an error naming the plugin and what it
// threw, not std::terminate.
TEST(PluginLoaderTest, EntryThatThrowsIsAnError) {
  LossRegistry registry;
  const std::string path = DISTILL_THROWING_ENTRY_PLUGIN;
  EXPECT_THAT(LoadLossPlugin(path, registry),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "loss plugin " + path +
                           " threw in its entry function: the entry of this "
                           "plugin fails"));
  EXPECT_TRUE(registry.Names().empty());
}

TEST(PluginLoaderTest, LoadingTwiceIsADuplicateName) {
  LossRegistry registry;
  ASSERT_THAT(LoadLossPlugin(kCosineKd, registry), IsOk());
  EXPECT_THAT(LoadLossPlugin(kCosineKd, registry),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("loss plugin " + kCosineKd +
                                 " registers loss 'cosine_kd', which is "
                                 "already registered")));
  EXPECT_THAT(registry.Names(), ElementsAre("cosine_kd"));
}

TEST(PluginLoaderTest, NameOfABuiltInIsADuplicate) {
  LossRegistry registry;
  LossEntry entry;
  entry.name = "cosine_kd";
  entry.factory = [](const LossParams&) -> std::unique_ptr<Loss> {
    return nullptr;
  };
  ASSERT_THAT(registry.Register(entry), IsOk());
  EXPECT_THAT(
      LoadLossPlugin(kCosineKd, registry),
      StatusIs(absl::StatusCode::kAlreadyExists,
               AllOf(HasSubstr("loss 'cosine_kd'"), HasSubstr(kCosineKd))));
}

}  // namespace
}  // namespace distill::losses
