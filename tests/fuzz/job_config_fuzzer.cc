// Fuzzes the job config's parser and validator (trainer/config.h) with
// arbitrary text. Every text either gives a config that validates, and
// that printed and parsed again gives back the same config, or an
// InvalidArgument error; never a crash, an abort or an exception. The seed
// corpus is the shipped configs (launch/configs/).
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_support.h"
#include "trainer/config.h"

namespace {

using distill::fuzz::Fail;
constexpr char kTarget[] = "job_config_fuzzer";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The plugins list is read ahead of the parse (plugins register losses
  // the config may name); it must survive the same text.
  (void)distill::trainer::ConfigPlugins(text, "fuzz.pbtxt");
  auto config = distill::trainer::ParseJobConfig(text, "fuzz.pbtxt");
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument &&
        config.status().code() != absl::StatusCode::kNotFound) {
      Fail(kTarget, "an error that is not InvalidArgument: " +
                        config.status().ToString());
    }
    return 0;
  }
  absl::Status again = distill::trainer::ValidateJobConfig(*config);
  if (!again.ok())
    Fail(kTarget, "a parsed config fails validation: " + again.ToString());
  std::string printed;
  if (!google::protobuf::TextFormat::PrintToString(*config, &printed)) {
    Fail(kTarget, "cannot print a parsed config");
  }
  auto reparsed = distill::trainer::ParseJobConfig(printed, "printed.pbtxt");
  if (!reparsed.ok()) {
    Fail(kTarget, "a parsed config, printed, does not parse: " +
                      reparsed.status().ToString() + "\n" + printed);
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(*config, *reparsed)) {
    Fail(kTarget,
         "a parsed config, printed and parsed again, differs:\n" + printed);
  }
  return 0;
}
