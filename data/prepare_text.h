// Turns a text corpus into tokenized splits: text splits (text_corpus.h),
// a SentencePiece BPE tokenizer trained on the training split, and one token
// file per split (token_file.h). SentencePiece runs as its own processes
// (spm_train, spm_encode): its library carries a protobuf that cannot share
// a process with LibTorch's and gRPC's. Output, in `out_dir`:
//   tokenizer.model, tokenizer.vocab      the SentencePiece model
//   {train,valid,test}.txt                the text of each split
//   {train,valid,test}.tok                the ids, document ends as </s>
//   corpus.json                           sizes, ids, split rule, SHA-256
// Everything is built in a sibling folder and renamed into place, so a
// failure leaves `out_dir` absent. Not thread-safe (runs child processes).
#ifndef DISTILL_DATA_PREPARE_TEXT_H_
#define DISTILL_DATA_PREPARE_TEXT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace distill::data {

struct PrepareTextOptions {
  // "kjv" (the King James Bible of Debian's bible-kjv, through its `bible`
  // command) or a folder of UTF-8 text files. Default: "kjv".
  std::string corpus = "kjv";
  // Required; must not exist yet.
  std::string out_dir;
  // BPE vocabulary, in [64, 65535]. Default: 8192.
  int64_t vocab_size = 8192;
  // Threads spm_train may use. Default: 2.
  int threads = 2;
};

// AlreadyExists when out_dir exists; the corpus readers' errors; Internal
// (with the tool's own last words) when spm_train or spm_encode fails.
absl::Status PrepareText(const PrepareTextOptions& options);

}  // namespace distill::data

#endif  // DISTILL_DATA_PREPARE_TEXT_H_
