#include "data/prepare_text.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "data/spm_text.h"
#include "data/text_corpus.h"
#include "data/token_file.h"

namespace distill::data {
namespace {

absl::StatusOr<TextSplits> ReadCorpus(const std::string& corpus,
                                      const std::string& scratch) {
  if (corpus != "kjv") return SplitTextDir(corpus);
  const std::string dump = scratch + "/kjv-dump.txt";
  CommandOptions to_dump;
  to_dump.stdout_path = dump;
  DISTILL_RETURN_IF_ERROR(
      Annotate(RunCommand({"bible", "Gen1:1-Rev22:21"}, to_dump),
               "dumping the King James Bible (Debian packages bible-kjv and "
               "bible-kjv-text)"));
  DISTILL_ASSIGN_OR_RETURN(std::string text, ReadFile(dump));
  std::filesystem::remove(dump);
  return SplitKjv(text);
}

// Parses spm_encode's id output: one line of ids per input line; an empty
// line (a document end in the split's text) becomes </s>.
absl::StatusOr<std::vector<uint32_t>> ParseIds(const std::string& path) {
  DISTILL_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3);
  int64_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) {
      if (!ids.empty() && ids.back() != kEosId) ids.push_back(kEosId);
      continue;
    }
    for (absl::string_view word :
         absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      uint32_t id = 0;
      if (!absl::SimpleAtoi(word, &id)) {
        return absl::InternalError(
            absl::StrCat("spm_encode wrote '", word, "' at line ", line_number,
                         " of ", path, ", not a token id"));
      }
      ids.push_back(id);
    }
  }
  if (!ids.empty() && ids.back() != kEosId) ids.push_back(kEosId);
  return ids;
}

}  // namespace

absl::Status PrepareText(const PrepareTextOptions& o) {
  if (o.out_dir.empty()) {
    return absl::InvalidArgumentError("an output folder is required");
  }
  if (o.vocab_size < 64 || o.vocab_size > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size ", o.vocab_size, " is outside [64, 65535]"));
  }
  std::error_code error;
  if (std::filesystem::exists(o.out_dir, error)) {
    return absl::AlreadyExistsError(absl::StrCat(
        o.out_dir, " already exists; remove it or choose another folder"));
  }
  const std::string out =
      std::filesystem::path(o.out_dir).lexically_normal().string();
  const std::string scratch =
      absl::StrCat(absl::StripSuffix(out, "/"), ".partial-", ::getpid());
  std::filesystem::remove_all(scratch, error);
  if (!std::filesystem::create_directories(scratch, error)) {
    return absl::InternalError(
        absl::StrCat("cannot create ", scratch, ": ", error.message()));
  }
  auto fail = [&](absl::Status status) {
    std::filesystem::remove_all(scratch, error);
    return status;
  };

  absl::StatusOr<TextSplits> splits = ReadCorpus(o.corpus, scratch);
  if (!splits.ok()) return fail(splits.status());
  const struct {
    const char* name;
    TokenSplit split;
    const std::string* text;
    int64_t lines;
  } parts[] = {
      {"train", TokenSplit::kTrain, &splits->train, splits->train_lines},
      {"valid", TokenSplit::kValid, &splits->valid, splits->valid_lines},
      {"test", TokenSplit::kTest, &splits->test, splits->test_lines}};
  for (const auto& part : parts) {
    absl::Status written = WriteStringAtomically(
        absl::StrCat(scratch, "/", part.name, ".txt"), *part.text);
    if (!written.ok()) return fail(written);
  }

  const std::string prefix = scratch + "/tokenizer";
  absl::Status trained = RunCommand({
      "spm_train",
      absl::StrCat("--input=", scratch, "/train.txt"),
      absl::StrCat("--model_prefix=", prefix),
      absl::StrCat("--vocab_size=", o.vocab_size),
      "--model_type=bpe",
      "--character_coverage=1.0",
      "--random_seed=1",
      "--minloglevel=1",
      absl::StrCat("--num_threads=", o.threads),
  });
  if (!trained.ok()) {
    return fail(Annotate(trained,
                         "training the tokenizer (spm_train, Debian "
                         "package sentencepiece)"));
  }
  absl::StatusOr<std::string> sha = FileSha256Hex(prefix + ".model");
  if (!sha.ok()) return fail(sha.status());

  nlohmann::json manifest;
  manifest["corpus"] = o.corpus;
  manifest["vocab_size"] = o.vocab_size;
  manifest["tokenizer_sha256"] = *sha;
  manifest["eos_id"] = kEosId;
  manifest["split_rule"] =
      o.corpus == "kjv"
          ? "whole books held out: validation Joshua, Ruth, Romans; test "
            "Proverbs, Mark, Hebrews"
          : "blocks of 20 non-empty lines: block b % 20 == 18 validation, "
            "19 test, else training";
  for (const auto& part : parts) {
    const std::string text = absl::StrCat(scratch, "/", part.name, ".txt");
    const std::string ids_path = absl::StrCat(scratch, "/", part.name, ".ids");
    CommandOptions files;
    files.stdin_path = text;
    files.stdout_path = ids_path;
    absl::Status encoded =
        RunCommand({"spm_encode", absl::StrCat("--model=", prefix, ".model"),
                    "--output_format=id"},
                   files);
    if (!encoded.ok()) return fail(Annotate(encoded, "spm_encode"));
    absl::StatusOr<std::vector<uint32_t>> ids = ParseIds(ids_path);
    if (!ids.ok()) return fail(ids.status());
    std::filesystem::remove(ids_path, error);
    TokenFileInfo info{o.vocab_size, part.split, *sha};
    absl::Status written = WriteTokenFile(
        absl::StrCat(scratch, "/", part.name, ".tok"), info, *ids);
    if (!written.ok()) return fail(written);
    manifest["splits"][part.name] = {{"lines", part.lines},
                                     {"tokens", ids->size()}};
  }
  absl::Status written =
      WriteStringAtomically(scratch + "/corpus.json", manifest.dump(2) + "\n");
  if (!written.ok()) return fail(written);
  std::filesystem::rename(scratch, out, error);
  if (error) {
    return fail(absl::InternalError(absl::StrCat(
        "cannot rename ", scratch, " to ", out, ": ", error.message())));
  }
  return absl::OkStatus();
}

}  // namespace distill::data
