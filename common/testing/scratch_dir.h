// A fresh folder for a test's files: created empty, removed when the test
// passed and kept (for a look at what went wrong) when it failed. Tests
// derive their fixture from ScratchDirTest, or hold a ScratchDir for a
// whole suite. For tests only.
#ifndef DISTILL_COMMON_TESTING_SCRATCH_DIR_H_
#define DISTILL_COMMON_TESTING_SCRATCH_DIR_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace distill::testing {

class ScratchDir {
 public:
  // <tmp>/distill_<name>_<pid>, emptied. Default: named after the running
  // test ("<suite>_<test>").
  ScratchDir();
  explicit ScratchDir(const std::string& name);
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  // Removes the folder unless the running test (or suite) has failed.
  ~ScratchDir();

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const {
    return path_ / name;
  }
  // Writes `text` to path()/`name` and returns that path.
  std::filesystem::path Write(const std::string& name,
                              const std::string& text) const;

 private:
  std::filesystem::path path_;
};

// A fixture with a ScratchDir per test in `dir_`.
class ScratchDirTest : public ::testing::Test {
 protected:
  std::filesystem::path Write(const std::string& name,
                              const std::string& text) const {
    return scratch_.Write(name, text);
  }

  ScratchDir scratch_;
  // scratch_.path(), the name the tests use.
  const std::filesystem::path dir_ = scratch_.path();
};

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_SCRATCH_DIR_H_
