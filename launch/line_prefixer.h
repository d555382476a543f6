// Copies a child's output to one of the launcher's streams one whole line at
// a time, each line prefixed with the child's role and rank ("[rank 1] ").
// Bytes without a final newline wait for the rest of their line, or for
// Flush() at end of stream. Not thread-safe: one owner feeds it.
#ifndef DISTILL_LAUNCH_LINE_PREFIXER_H_
#define DISTILL_LAUNCH_LINE_PREFIXER_H_

#include <functional>
#include <string>

#include "absl/strings/string_view.h"

namespace distill::launch {

class LinePrefixer {
 public:
  // `sink` receives each complete, prefixed line including its newline.
  LinePrefixer(std::string prefix, std::function<void(absl::string_view)> sink);

  // Takes the next bytes of the stream.
  void Feed(absl::string_view bytes);
  // End of stream: an unfinished last line goes out with a newline added.
  void Flush();

 private:
  std::string prefix_;
  std::function<void(absl::string_view)> sink_;
  std::string pending_;
};

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_LINE_PREFIXER_H_
