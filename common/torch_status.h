// The boundary between LibTorch, which throws, and the rest of the framework,
// which returns absl::Status. Every module that calls into torch wraps those
// calls with TorchCall so that no c10::Error crosses a module boundary.
#ifndef DISTILL_COMMON_TORCH_STATUS_H_
#define DISTILL_COMMON_TORCH_STATUS_H_

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace distill {

namespace internal {
template <typename T>
struct TorchCallResult {
  using type = absl::StatusOr<T>;
};
template <>
struct TorchCallResult<void> {
  using type = absl::Status;
};
template <>
struct TorchCallResult<absl::Status> {
  using type = absl::Status;
};
template <typename T>
struct TorchCallResult<absl::StatusOr<T>> {
  using type = absl::StatusOr<T>;
};
}  // namespace internal

// Runs `fn`, turning a c10::Error or std::exception into an InternalError
// whose message starts with `context`. `fn` may return void, a value, a
// Status or a StatusOr; the result is the matching Status or StatusOr.
template <typename Fn>
auto TorchCall(absl::string_view context, Fn&& fn) ->
    typename internal::TorchCallResult<std::invoke_result_t<Fn>>::type {
  using R = std::invoke_result_t<Fn>;
  try {
    if constexpr (std::is_void_v<R>) {
      fn();
      return absl::OkStatus();
    } else {
      return fn();
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(context, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", e.what()));
  }
}

}  // namespace distill

#endif  // DISTILL_COMMON_TORCH_STATUS_H_
