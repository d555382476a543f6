// Reading the job config: protobuf text parsed with errors that name the
// file, line and column, then ApplyDefaults (config_defaults.cc) and
// ValidateJobConfig (config_validate.cc), whose errors get the field's line.
#include "trainer/config.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/status.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace distill::trainer {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::TextFormat;

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, int column, const std::string& message) override {
    errors_.push_back(
        absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, int column, const std::string& message) override {}
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

// Resolves "a.b[2].c" to the line of that field in the parsed text.
int LineOf(const std::string& path, const Descriptor* descriptor,
           const TextFormat::ParseInfoTree* tree) {
  int line = -1;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (tree == nullptr || descriptor == nullptr) break;
    std::string name(part.substr(0, part.find('[')));
    int index = -1;
    if (part.find('[') != absl::string_view::npos) {
      int parsed = 0;
      absl::string_view inside =
          part.substr(part.find('[') + 1, part.size() - part.find('[') - 2);
      if (absl::SimpleAtoi(inside, &parsed)) index = parsed;
    }
    const FieldDescriptor* field = descriptor->FindFieldByName(name);
    if (field == nullptr) break;
    int at = field->is_repeated() ? std::max(index, 0) : -1;
    auto loc = tree->GetLocation(field, at);
    if (loc.line < 0) break;
    line = loc.line + 1;
    if (field->type() != FieldDescriptor::TYPE_MESSAGE || field->is_map())
      break;
    tree = tree->GetTreeForNested(field, at);
    descriptor = field->message_type();
  }
  return line;
}

// Parses without applying defaults or validating.
absl::Status ParseText(const std::string& text, const std::string& source,
                       JobConfig& config, TextFormat::ParseInfoTree* tree) {
  Collector collector(source);
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  parser.WriteLocationsTo(tree);
  if (!parser.ParseFromString(text, &config)) {
    std::string message = collector.errors().empty()
                              ? absl::StrCat(source, ": cannot parse")
                              : collector.errors().front();
    return absl::InvalidArgumentError(message);
  }
  return absl::OkStatus();
}

}  // namespace

bool IsRemoteTeacher(const ::distill::v1::TeacherConfig& teacher) {
  return teacher.endpoints_size() > 0 || !teacher.registry_dir().empty();
}

bool HasTeacher(const JobConfig& c) {
  return c.mode() == JobConfig::DISTILL ||
         (c.mode() == JobConfig::QUANTIZE && c.has_teacher());
}

absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text,
                                         const std::string& source,
                                         const std::string& run_dir) {
  ConfigOverrides overrides;
  overrides.run_dir = run_dir;
  return ParseJobConfig(text, source, overrides);
}

absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text,
                                         const std::string& source,
                                         const ConfigOverrides& overrides) {
  JobConfig config;
  TextFormat::ParseInfoTree tree;
  DISTILL_RETURN_IF_ERROR(ParseText(text, source, config, &tree));
  if (!overrides.run_dir.empty()) config.set_run_dir(overrides.run_dir);
  if (!overrides.teacher_endpoints.empty() ||
      !overrides.teacher_token_file.empty() ||
      !overrides.teacher_tls_ca_file.empty()) {
    if (config.mode() != JobConfig::DISTILL) {
      return absl::InvalidArgumentError(absl::StrCat(
          source,
          ": --teacher_endpoints, --teacher_token_file and --teacher_tls_ca "
          "apply to mode DISTILL only"));
    }
    v1::TeacherConfig* teacher = config.mutable_teacher();
    if (!overrides.teacher_endpoints.empty()) {
      teacher->clear_model();
      teacher->clear_endpoints();
      for (const std::string& e : overrides.teacher_endpoints) {
        teacher->add_endpoints(e);
      }
    }
    if (!overrides.teacher_token_file.empty()) {
      teacher->set_token_file(overrides.teacher_token_file);
    }
    if (!overrides.teacher_tls_ca_file.empty()) {
      teacher->set_tls_ca_file(overrides.teacher_tls_ca_file);
    }
  }
  ApplyDefaults(config);
  absl::Status valid = ValidateJobConfig(config);
  if (!valid.ok()) {
    std::string message(valid.message());
    std::string path = message.substr(0, message.find(' '));
    int line = LineOf(path, JobConfig::descriptor(), &tree);
    return absl::InvalidArgumentError(
        line > 0 ? absl::StrCat(source, ":", line, ": ", message)
                 : absl::StrCat(source, ": ", message));
  }
  return config;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat("config file not found: ", path));
  }
  return text;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                        const std::string& run_dir) {
  DISTILL_ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseJobConfig(text, path, run_dir);
}

absl::StatusOr<std::vector<std::string>> ConfigPlugins(
    const std::string& text, const std::string& source) {
  JobConfig config;
  TextFormat::ParseInfoTree tree;
  DISTILL_RETURN_IF_ERROR(ParseText(text, source, config, &tree));
  return std::vector<std::string>(config.plugins().begin(),
                                  config.plugins().end());
}

}  // namespace distill::trainer