#include "losses/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "common/testing/status_matchers.h"

namespace distill::losses {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class ConstantLoss final : public Loss {
 public:
  explicit ConstantLoss(double value) : value_(value) {}
  absl::StatusOr<torch::Tensor> Compute(const LossInputs&) const override {
    return torch::tensor(value_);
  }

 private:
  double value_;
};

// An entry whose factory records the parameters it was given.
LossEntry TestEntry(const std::string& name,
                    std::shared_ptr<LossParams> seen = nullptr) {
  LossEntry entry;
  entry.name = name;
  entry.description = "test loss";
  entry.params.push_back({"alpha", 0.5, 0.0, 1.0, "a weight"});
  entry.params.push_back({"beta", 2.0, 1.0, 10.0, "a scale"});
  entry.factory = [seen](const LossParams& params) -> std::unique_ptr<Loss> {
    if (seen != nullptr) *seen = params;
    return std::make_unique<ConstantLoss>(params.at("alpha"));
  };
  return entry;
}

TEST(LossRegistryTest, EveryBuiltinResolves) {
  const LossRegistry& registry = LossRegistry::Global();
  const std::vector<std::pair<std::string, bool>> builtins = {
      {"hard_ce", false}, {"kd_kl", true},   {"reverse_kl", true},
      {"js", true},       {"soft_ce", true}, {"mse_logits", true},
      {"tvd", true},      {"dkd", true},     {"generalized_jsd", true}};
  for (const auto& [name, needs_teacher] : builtins) {
    absl::StatusOr<LossEntry> entry = registry.Find(name);
    ASSERT_THAT(entry, IsOk()) << name;
    EXPECT_EQ(entry->name, name);
    EXPECT_EQ(entry->needs_teacher, needs_teacher) << name;
    EXPECT_FALSE(entry->description.empty()) << name;
    absl::StatusOr<std::unique_ptr<Loss>> loss = registry.Create(name, {});
    ASSERT_THAT(loss, IsOk()) << name;
    EXPECT_NE(*loss, nullptr);
  }
  EXPECT_THAT(registry.Names(),
              ::testing::IsSupersetOf({"hard_ce", "kd_kl", "reverse_kl", "js",
                                       "soft_ce", "mse_logits", "tvd", "dkd",
                                       "generalized_jsd"}));
}

TEST(LossRegistryTest, UnknownNameListsKnownOnes) {
  LossRegistry registry;
  ASSERT_THAT(registry.Register(TestEntry("beta_loss")), IsOk());
  ASSERT_THAT(registry.Register(TestEntry("alpha_loss")), IsOk());
  EXPECT_THAT(registry.Create("gamma_loss", {}),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("unknown loss 'gamma_loss'; known losses: "
                                 "alpha_loss, beta_loss")));
  EXPECT_THAT(registry.Find("gamma_loss"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("known losses: alpha_loss, beta_loss")));
  EXPECT_THAT(LossRegistry::Global().Create("kl", {}),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("unknown loss 'kl'"),
                             HasSubstr("hard_ce, js, kd_kl"))));
}

TEST(LossRegistryTest, DuplicateNameIsRefused) {
  LossRegistry registry;
  ASSERT_THAT(registry.Register(TestEntry("mine")), IsOk());
  EXPECT_THAT(registry.Register(TestEntry("mine")),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("loss 'mine' is already registered")));
  EXPECT_THAT(LossRegistry::Global().Register(TestEntry("kd_kl")),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("loss 'kd_kl' is already registered")));
}

TEST(LossRegistryTest, MalformedEntriesAreRefused) {
  LossRegistry registry;
  EXPECT_THAT(registry.Register(TestEntry("")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("non-empty name")));
  LossEntry no_factory = TestEntry("x");
  no_factory.factory = nullptr;
  EXPECT_THAT(registry.Register(no_factory),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'x' has no factory")));
  LossEntry bad_default = TestEntry("y");
  bad_default.params[1].default_value = 11.0;
  EXPECT_THAT(registry.Register(bad_default),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("parameter 'beta' default 11")));
  EXPECT_TRUE(registry.Names().empty());
}

TEST(LossRegistryTest, UnknownParameterIsInvalidArgument) {
  LossRegistry registry;
  ASSERT_THAT(registry.Register(TestEntry("mine")), IsOk());
  EXPECT_THAT(registry.Create("mine", {{"gamma", 1.0}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'mine' has no parameter 'gamma'; its "
                                 "parameters: alpha, beta")));
  EXPECT_THAT(LossRegistry::Global().Create("kd_kl", {{"temperature", 2.0}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'kd_kl' has no parameter "
                                 "'temperature'; its parameters: (none)")));
}

TEST(LossRegistryTest, OutOfBoundsParameterIsInvalidArgument) {
  LossRegistry registry;
  ASSERT_THAT(registry.Register(TestEntry("mine")), IsOk());
  EXPECT_THAT(registry.Create("mine", {{"beta", 0.5}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss 'mine' parameter 'beta' = 0.5 is "
                                 "outside [1, 10]")));
  EXPECT_THAT(registry.Create("mine", {{"alpha", std::nan("")}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("parameter 'alpha' = nan is outside")));
  EXPECT_THAT(
      LossRegistry::Global().Create("hard_ce", {{"label_smoothing", 1.0}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("loss 'hard_ce' parameter 'label_smoothing' "
                         "= 1 is outside [0, 0.999999]")));
}

TEST(LossRegistryTest, DefaultsAreFilledIn) {
  LossRegistry registry;
  auto seen = std::make_shared<LossParams>();
  ASSERT_THAT(registry.Register(TestEntry("mine", seen)), IsOk());
  ASSERT_THAT(registry.Create("mine", {{"beta", 3.0}}), IsOk());
  EXPECT_THAT(*seen, ::testing::ElementsAre(::testing::Pair("alpha", 0.5),
                                            ::testing::Pair("beta", 3.0)));
}

}  // namespace
}  // namespace distill::losses
