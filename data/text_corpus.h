// Text corpora for language-model jobs, split into train / validation / test
// text before tokenization. Splits are deterministic and disjoint:
// * The King James Bible (Debian's bible-kjv, dumped by its `bible`
//   command): whole books are held out. Validation: Joshua, Ruth, Romans
//   (~32k words); test: Proverbs, Mark, Hebrews (~39k words); training: the
//   other 60 books (~752k words).
// * A folder of UTF-8 text files (every regular file not starting with '.',
//   in name order): the non-empty lines are taken in blocks of 20; block b
//   goes to validation when b % 20 == 18, to test when b % 20 == 19, else to
//   training (5% / 5% / 90%).
// Each split's text has one paragraph (verse, line) per line; an empty line
// ends a document (a book, a file), which the token files mark with the
// end-of-text id. Pure functions; thread-safe.
#ifndef DISTILL_DATA_TEXT_CORPUS_H_
#define DISTILL_DATA_TEXT_CORPUS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace distill::data {

struct TextSplits {
  std::string train;
  std::string valid;
  std::string test;
  // Paragraphs (lines) in each split.
  int64_t train_lines = 0;
  int64_t valid_lines = 0;
  int64_t test_lines = 0;
};

// Splits the output of `bible Gen1:1-Rev22:21`. InvalidArgument when the
// text is not such a dump (no "Book N" chapter headings, or a held-out book
// missing).
absl::StatusOr<TextSplits> SplitKjv(absl::string_view dump);

// Reads and splits the text files of `dir`. NotFound when it is not a
// folder; InvalidArgument when it has no text, a file is not UTF-8 (naming
// the file and line), or there is too little text for all three splits.
absl::StatusOr<TextSplits> SplitTextDir(const std::string& dir);

}  // namespace distill::data

#endif  // DISTILL_DATA_TEXT_CORPUS_H_
