// The `distill_prepare_text` binary: a text corpus in, tokenized splits out
// (data/prepare_text.h).
//
//   distill_prepare_text --out_dir DIR [--corpus kjv|FOLDER]
//                        [--vocab_size 8192]
//
// Exit status: 0 on success, 1 with one "distill_prepare_text: error: ..."
// line on any failure (and no DIR written).
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "data/prepare_text.h"

ABSL_FLAG(std::string, corpus, "kjv",
          "\"kjv\" (Debian's bible-kjv) or a folder of UTF-8 text files.");
ABSL_FLAG(std::string, out_dir, "", "Output folder; must not exist yet.");
ABSL_FLAG(int64_t, vocab_size, 8192, "BPE vocabulary size, 64..65535.");
ABSL_FLAG(int32_t, threads, 2, "Threads for spm_train.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Tokenizes a text corpus for language-model jobs: "
      "distill_prepare_text --out_dir DIR [--corpus kjv|FOLDER]");
  absl::ParseCommandLine(argc, argv);
  distill::data::PrepareTextOptions options;
  options.corpus = absl::GetFlag(FLAGS_corpus);
  options.out_dir = absl::GetFlag(FLAGS_out_dir);
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  options.threads = absl::GetFlag(FLAGS_threads);
  const absl::Status status = distill::data::PrepareText(options);
  if (!status.ok()) {
    std::fprintf(stderr, "distill_prepare_text: error: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  std::printf("wrote %s\n", options.out_dir.c_str());
  return 0;
}
