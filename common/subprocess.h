// Runs another program to completion, for the steps the framework delegates
// to a tool of its own (the tokenizer's spm_train and spm_encode, which must
// not share a process with LibTorch). Stateless; safe from any thread.
#ifndef DISTILL_COMMON_SUBPROCESS_H_
#define DISTILL_COMMON_SUBPROCESS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace distill {

struct CommandOptions {
  // Files that replace the child's stdin and stdout; empty keeps this
  // process's. Default: empty.
  std::string stdin_path;
  std::string stdout_path;
};

// Runs argv[0] (looked up in PATH when it has no '/') with `argv` and waits.
// NotFound when the program cannot be started; Internal when it exits
// non-zero or dies of a signal, with the last lines it wrote to stderr.
absl::Status RunCommand(const std::vector<std::string>& argv,
                        const CommandOptions& options = {});

}  // namespace distill

#endif  // DISTILL_COMMON_SUBPROCESS_H_
