#include "common/testing/run_files.h"

#include <gtest/gtest.h>

#include <sstream>

#include "common/testing/process.h"

namespace distill::testing {

std::vector<nlohmann::json> MetricsRecords(const std::filesystem::path& run,
                                           const std::string& type) {
  const std::string text = ReadFile(run / "metrics.jsonl");
  std::vector<nlohmann::json> records;
  size_t start = 0;
  for (size_t end = text.find('\n'); end != std::string::npos;
       start = end + 1, end = text.find('\n', start)) {
    const std::string line = text.substr(start, end - start);
    auto record =
        nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      ADD_FAILURE() << "not a JSON object in " << (run / "metrics.jsonl")
                    << ": " << line;
      continue;
    }
    if (type.empty() || record["type"] == type) records.push_back(record);
  }
  return records;
}

int64_t LastTrainStep(const std::filesystem::path& run) {
  const std::vector<nlohmann::json> train = MetricsRecords(run, "train");
  return train.empty() ? 0 : train.back()["step"].get<int64_t>();
}

nlohmann::json Summary(const std::filesystem::path& run) {
  const std::filesystem::path file = run / "summary.json";
  auto summary = nlohmann::json::parse(ReadFile(file), nullptr,
                                       /*allow_exceptions=*/false);
  if (summary.is_discarded()) {
    ADD_FAILURE() << file << " is missing or not JSON";
    return nullptr;
  }
  return summary;
}

std::vector<nlohmann::json> ExpectLossTermWithin(
    const std::filesystem::path& run, const std::string& term, double low,
    double high) {
  // The summary keeps its terms under "loss_terms", train records under
  // "terms".
  const auto expect_within = [&](const nlohmann::json& record,
                                 const char* key) {
    if (!record.contains(key) || !record[key].contains(term)) {
      ADD_FAILURE() << "no loss term '" << term << "' in " << record.dump();
      return;
    }
    const double value = record[key][term].get<double>();
    EXPECT_GT(value, low) << record.dump();
    EXPECT_LT(value, high) << record.dump();
  };
  expect_within(Summary(run), "loss_terms");
  std::vector<nlohmann::json> train = MetricsRecords(run, "train");
  for (const nlohmann::json& record : train) expect_within(record, "terms");
  return train;
}

}  // namespace distill::testing
