#include "common/testing/scratch_dir.h"

#include <unistd.h>

#include <fstream>

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

std::string CurrentTestName() {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return "suite";
  return std::string(info->test_suite_name()) + "_" + info->name();
}

}  // namespace

ScratchDir::ScratchDir() : ScratchDir(CurrentTestName()) {}

ScratchDir::ScratchDir(const std::string& name) {
  std::string safe = name;
  for (char& c : safe) {
    if (c == '/') c = '_';  // parameterized test names hold slashes
  }
  path_ = fs::temp_directory_path() /
          ("distill_" + safe + "_" + std::to_string(::getpid()));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  const bool failed = unit.current_test_info() != nullptr
                          ? ::testing::Test::HasFailure()
                      : unit.current_test_suite() != nullptr
                          ? unit.current_test_suite()->Failed()
                          : unit.Failed();
  if (!failed) {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
}

fs::path ScratchDir::Write(const std::string& name,
                           const std::string& text) const {
  const fs::path file = path_ / name;
  std::ofstream(file, std::ios::binary) << text;
  return file;
}

}  // namespace distill::testing
