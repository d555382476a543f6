// Reading and validating the job config (proto/job.proto) from protobuf text
// format, in three steps: parse (config.cc), fill in defaults (the one place
// they are written in code, config_defaults.cc) and validate
// (config_validate.cc). Parse errors name the file, line and column;
// validation errors name the field (and its line when the config came from
// text). Stateless.
#ifndef DISTILL_TRAINER_CONFIG_H_
#define DISTILL_TRAINER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace distill::trainer {

using JobConfig = ::distill::v1::JobConfig;

// Parses `text` (protobuf text format), fills in defaults and validates
// every value. `source` names the text in error messages (a file path); a
// non-empty `run_dir` replaces the config's (the --run_dir flag).
// InvalidArgument for a syntax error, an unknown field, a wrong type or a
// bad value.
absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text,
                                         const std::string& source,
                                         const std::string& run_dir = "");

// What the command line overrides in a config, applied after parsing and
// before the defaults and validation, so a config may leave out what the
// command line supplies (a DISTILL config without a teacher section, run
// with --teacher_endpoints by distill_launch).
struct ConfigOverrides {
  // Replaces run_dir. Empty: the config's.
  std::string run_dir;
  // Mode DISTILL only. Non-empty: the servers the teacher is reached at,
  // replacing teacher.model and teacher.endpoints.
  std::vector<std::string> teacher_endpoints;
  // Mode DISTILL only. Non-empty: replace teacher.token_file and
  // teacher.tls_ca_file.
  std::string teacher_token_file;
  std::string teacher_tls_ca_file;
};

// ParseJobConfig with `overrides`; InvalidArgument "<source>: --teacher_...
// apply to mode DISTILL only" when a teacher override meets another mode.
absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text,
                                         const std::string& source,
                                         const ConfigOverrides& overrides);

// The text of a config file; NotFound when it cannot be opened. Read once:
// the path may be a pipe (`--config <(...)`).
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// Reads and parses a file; NotFound when it does not exist.
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                        const std::string& run_dir = "");

// The `plugins` list of a config's text, read ahead of ParseJobConfig:
// plugins must be loaded before the config is validated, since its loss
// terms may name their losses. Checks the syntax only; errors as
// ParseJobConfig's (InvalidArgument with source:line:col).
absl::StatusOr<std::vector<std::string>> ConfigPlugins(
    const std::string& text, const std::string& source);

// True when the teacher is reached over gRPC (endpoints or registry_dir set)
// rather than run in this process.
bool IsRemoteTeacher(const ::distill::v1::TeacherConfig& teacher);

// True when a teacher guides the job: mode DISTILL, and the QAT stage of
// mode QUANTIZE when the config gives one.
bool HasTeacher(const JobConfig& config);

// Sets every absent optional field to its documented default.
void ApplyDefaults(JobConfig& config);

// Checks every value of a config that has its defaults applied. The status
// message starts with the field's path, e.g. "optimizer.lr must be > 0".
absl::Status ValidateJobConfig(const JobConfig& config);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_CONFIG_H_
