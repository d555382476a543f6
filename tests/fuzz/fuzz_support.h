// What the fuzz targets share: handing bytes to readers that take a path,
// splitting one input into several messages, and writing seed inputs.
//
// Each target is a libFuzzer binary (tests/fuzz/README.md). Besides
// libFuzzer's own flags it takes `--write_seeds=DIR`, which writes inputs made
// by the project's own well-behaved code into DIR and exits: the seed corpora
// under tests/fuzz/corpus/ were made that way.
#ifndef DISTILL_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define DISTILL_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace distill::fuzz {

// An anonymous in-memory file (memfd) holding `size` bytes, and the path
// ("/proc/self/fd/N") that opens it. Aborts when the kernel refuses one:
// a fuzzer that cannot run must not pass.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size);
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Splits `data` into the records of the fuzz inputs' framing: each record a
// 4-byte little-endian length and that many bytes; a last record cut short
// keeps what is there. At most `max_records`.
std::vector<std::string> SplitRecords(const uint8_t* data, size_t size,
                                      size_t max_records);
// The framing SplitRecords reads.
std::string JoinRecords(const std::vector<std::string>& records);

// For LLVMFuzzerInitialize: when the arguments hold `--write_seeds=DIR`,
// runs `write(DIR)` and exits 0; otherwise returns.
void WriteSeedsIfAsked(int argc, char** argv,
                       const std::function<void(const std::string&)>& write);
// Writes `bytes` to DIR/NAME; aborts with a message on failure.
void WriteSeed(const std::string& dir, const std::string& name,
               const std::string& bytes);

// Prints "<target>: <what>" to stderr and aborts, so libFuzzer records the
// input as a crash: for a result that breaks the function's contract.
[[noreturn]] void Fail(const std::string& target, const std::string& what);

}  // namespace distill::fuzz

#endif  // DISTILL_TESTS_FUZZ_FUZZ_SUPPORT_H_
