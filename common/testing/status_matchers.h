// GoogleMock matchers for absl::Status and absl::StatusOr, for tests only:
//   EXPECT_THAT(DoIt(), StatusIs(absl::StatusCode::kNotFound,
//                                HasSubstr("train-images")));
//   EXPECT_THAT(MakeX(), IsOk());
#ifndef DISTILL_COMMON_TESTING_STATUS_MATCHERS_H_
#define DISTILL_COMMON_TESTING_STATUS_MATCHERS_H_

#include <gmock/gmock.h>

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace distill::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + absl::StatusCodeToString(code) +
               " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "which is " << status.ToString();
  return status.code() == code &&
         ::testing::Matches(message_matcher)(std::string(status.message()));
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "which is " << status.ToString();
  return status.ok();
}

}  // namespace distill::testing

namespace absl {
// Lets GoogleTest print a StatusOr by its status instead of its bytes.
template <typename T>
void PrintTo(const StatusOr<T>& status_or, std::ostream* os) {
  *os << status_or.status();
}
}  // namespace absl

#endif  // DISTILL_COMMON_TESTING_STATUS_MATCHERS_H_
