#include "data/text_corpus.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"
#include "common/status.h"

namespace distill::data {
namespace {

constexpr int64_t kBlockLines = 20;

enum class Split { kTrain, kValid, kTest };

void Append(TextSplits& splits, Split split, absl::string_view paragraph) {
  std::string& text = split == Split::kValid  ? splits.valid
                      : split == Split::kTest ? splits.test
                                              : splits.train;
  int64_t& lines = split == Split::kValid  ? splits.valid_lines
                   : split == Split::kTest ? splits.test_lines
                                           : splits.train_lines;
  if (paragraph.empty()) {
    if (!text.empty() && !absl::EndsWith(text, "\n\n")) text += '\n';
    return;
  }
  absl::StrAppend(&text, paragraph, "\n");
  ++lines;
}

// "Genesis 1" -> "Genesis"; "Song of Solomon 3" -> "Song of Solomon"; empty
// when `line` is not a chapter heading.
std::string BookOfHeading(absl::string_view line) {
  if (line.empty() || line.front() == ' ') return "";
  const size_t space = line.rfind(' ');
  int chapter = 0;
  if (space == absl::string_view::npos ||
      !absl::SimpleAtoi(line.substr(space + 1), &chapter)) {
    return "";
  }
  return std::string(line.substr(0, space));
}

// Offset of the first invalid UTF-8 byte in `s`, or npos.
size_t InvalidUtf8At(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80           ? 1
               : (c >> 5) == 0x6  ? 2
               : (c >> 4) == 0xE  ? 3
               : (c >> 3) == 0x1E ? 4
                                  : 0;
    if (n == 0 || i + n > s.size()) return i;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    }
    i += n;
  }
  return absl::string_view::npos;
}

}  // namespace

absl::StatusOr<TextSplits> SplitKjv(absl::string_view dump) {
  static const std::set<std::string>* const kValid =
      new std::set<std::string>{"Joshua", "Ruth", "Romans"};
  static const std::set<std::string>* const kTest =
      new std::set<std::string>{"Proverbs", "Mark", "Hebrews"};
  TextSplits splits;
  std::set<std::string> seen;
  std::string book;
  Split split = Split::kTrain;
  std::string verse;
  auto flush = [&] {
    if (!verse.empty()) Append(splits, split, verse);
    verse.clear();
  };
  for (absl::string_view line : absl::StrSplit(dump, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    const std::string heading = BookOfHeading(line);
    if (!heading.empty()) {
      flush();
      if (heading != book) {
        if (!book.empty()) Append(splits, split, "");
        book = heading;
        seen.insert(book);
        split = kValid->count(book)  ? Split::kValid
                : kTest->count(book) ? Split::kTest
                                     : Split::kTrain;
      }
      continue;
    }
    if (book.empty() || line.empty()) continue;
    absl::string_view text = absl::StripLeadingAsciiWhitespace(line);
    if (line.front() == ' ') {
      // "  12 And God said": a new verse; drop its number.
      flush();
      const size_t space = text.find(' ');
      text = space == absl::string_view::npos ? "" : text.substr(space + 1);
    }
    if (!verse.empty() && !text.empty()) verse += ' ';
    verse += std::string(text);
  }
  flush();
  Append(splits, split, "");
  for (const auto* held_out : {kValid, kTest}) {
    for (const std::string& b : *held_out) {
      if (!seen.count(b)) {
        return absl::InvalidArgumentError(
            absl::StrCat("not a King James Bible dump: book '", b,
                         "' is missing (", seen.size(), " books found)"));
      }
    }
  }
  return splits;
}

absl::StatusOr<TextSplits> SplitTextDir(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::NotFoundError(absl::StrCat("corpus folder ", dir,
                                            " does not exist or is not a "
                                            "folder"));
  }
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && !absl::StartsWith(name, ".")) {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  TextSplits splits;
  int64_t line_index = 0;
  for (const std::string& file : files) {
    DISTILL_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
    int64_t line_number = 0;
    std::set<Split> used;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_number;
      if (const size_t bad = InvalidUtf8At(line);
          bad != absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, " line ", line_number, " byte ", bad + 1,
                         " is not UTF-8 text"));
      }
      line = absl::StripAsciiWhitespace(line);
      if (line.empty()) continue;
      const int64_t slot = (line_index / kBlockLines) % 20;
      const Split split = slot == 18   ? Split::kValid
                          : slot == 19 ? Split::kTest
                                       : Split::kTrain;
      Append(splits, split, line);
      used.insert(split);
      ++line_index;
    }
    for (Split split : used) Append(splits, split, "");
  }
  if (line_index == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("corpus folder ", dir, " has no text (", files.size(),
                     " files, no non-empty line)"));
  }
  if (splits.test_lines == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "corpus folder ", dir, " has too little text: ", line_index,
        " non-empty lines; validation and test need at least ",
        20 * kBlockLines));
  }
  return splits;
}

}  // namespace distill::data
