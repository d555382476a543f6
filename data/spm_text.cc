#include "data/spm_text.h"

#include <stdlib.h>

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"
#include "common/status.h"
#include "common/subprocess.h"

namespace distill::data {
namespace {

namespace fs = std::filesystem;

// A folder of its own under the system's temporary directory, removed with
// everything in it when this goes out of scope.
class ScratchFolder {
 public:
  static absl::StatusOr<ScratchFolder> Create() {
    std::string pattern = (fs::temp_directory_path() / "distill-spm-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(
          absl::StrCat("cannot create a scratch folder like ", pattern));
    }
    return ScratchFolder(pattern);
  }
  ScratchFolder(ScratchFolder&& other) noexcept
      : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ~ScratchFolder() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  std::string File(const std::string& name) const {
    return (fs::path(path_) / name).string();
  }

 private:
  explicit ScratchFolder(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

absl::Status CheckModel(const std::string& model) {
  std::error_code ec;
  if (!fs::is_regular_file(model, ec)) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer model ", model, " does not exist"));
  }
  return absl::OkStatus();
}

// What `argv` writes to stdout when `input` is its stdin, through files in
// a scratch folder; errors annotated with `what`.
absl::StatusOr<std::string> Filter(const std::vector<std::string>& argv,
                                   const std::string& input,
                                   const std::string& what) {
  DISTILL_ASSIGN_OR_RETURN(ScratchFolder scratch, ScratchFolder::Create());
  DISTILL_RETURN_IF_ERROR(WriteStringAtomically(scratch.File("in"), input));
  CommandOptions options;
  options.stdin_path = scratch.File("in");
  options.stdout_path = scratch.File("out");
  DISTILL_RETURN_IF_ERROR(Annotate(RunCommand(argv, options), what));
  return ReadFile(scratch.File("out"));
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> EncodeText(
    const std::string& tokenizer_model, const std::string& text) {
  DISTILL_RETURN_IF_ERROR(CheckModel(tokenizer_model));
  // One line: the tokenizer encodes line by line.
  std::string line = text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  DISTILL_ASSIGN_OR_RETURN(
      const std::string out,
      Filter({"spm_encode", "--model=" + tokenizer_model, "--output_format=id"},
             line + "\n", "encoding the prompt"));
  std::vector<int64_t> ids;
  for (absl::string_view word :
       absl::StrSplit(absl::StripAsciiWhitespace(out), absl::ByAnyChar(" \n"),
                      absl::SkipEmpty())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(word, &id)) {
      return absl::InternalError(
          absl::StrCat("spm_encode wrote '", word, "', not a token id"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the text '", text, "' has no tokens"));
  }
  return ids;
}

absl::StatusOr<std::string> DecodeIds(const std::string& tokenizer_model,
                                      absl::Span<const int64_t> ids) {
  DISTILL_RETURN_IF_ERROR(CheckModel(tokenizer_model));
  // One line of ids per document; spm_decode writes one line of text each.
  std::vector<std::string> lines(1);
  for (const int64_t id : ids) {
    if (id == kEosId) {
      lines.emplace_back();
    } else {
      absl::StrAppend(&lines.back(), lines.back().empty() ? "" : " ", id);
    }
  }
  DISTILL_ASSIGN_OR_RETURN(
      std::string text,
      Filter({"spm_decode", "--model=" + tokenizer_model, "--input_format=id"},
             absl::StrJoin(lines, "\n") + "\n", "decoding token ids"));
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

}  // namespace distill::data
