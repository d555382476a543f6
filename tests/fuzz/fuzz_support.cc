#include "tests/fuzz/fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace distill::fuzz {

MemoryFile::MemoryFile(const uint8_t* data, size_t size) {
  fd_ = memfd_create("fuzz_input", MFD_CLOEXEC);
  if (fd_ < 0)
    Fail("MemoryFile", std::string("memfd_create: ") + strerror(errno));
  size_t done = 0;
  while (done < size) {
    const ssize_t n = write(fd_, data + done, size - done);
    if (n <= 0) Fail("MemoryFile", std::string("write: ") + strerror(errno));
    done += static_cast<size_t>(n);
  }
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemoryFile::~MemoryFile() { close(fd_); }

std::vector<std::string> SplitRecords(const uint8_t* data, size_t size,
                                      size_t max_records) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < size && records.size() < max_records) {
    uint32_t length = 0;
    for (int i = 0; i < 4 && at < size; ++i, ++at) {
      length |= static_cast<uint32_t>(data[at]) << (8 * i);
    }
    const size_t take = std::min<size_t>(length, size - at);
    records.emplace_back(reinterpret_cast<const char*>(data + at), take);
    at += take;
  }
  return records;
}

std::string JoinRecords(const std::vector<std::string>& records) {
  std::string out;
  for (const std::string& record : records) {
    const auto length = static_cast<uint32_t>(record.size());
    for (int i = 0; i < 4; ++i)
      out.push_back(static_cast<char>(length >> (8 * i)));
    out += record;
  }
  return out;
}

void WriteSeedsIfAsked(int argc, char** argv,
                       const std::function<void(const std::string&)>& write) {
  const std::string flag = "--write_seeds=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], flag.c_str(), flag.size()) == 0) {
      write(argv[i] + flag.size());
      std::exit(0);
    }
  }
}

void WriteSeed(const std::string& dir, const std::string& name,
               const std::string& bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) Fail("WriteSeed", "cannot write " + path);
  std::fprintf(stderr, "wrote %s (%zu bytes)\n", path.c_str(), bytes.size());
}

void Fail(const std::string& target, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", target.c_str(), what.c_str());
  std::abort();
}

}  // namespace distill::fuzz
