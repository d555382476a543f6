// Reading what a `distill` run wrote into its run folder: the records of
// metrics.jsonl and summary.json. For tests only.
#ifndef DISTILL_COMMON_TESTING_RUN_FILES_H_
#define DISTILL_COMMON_TESTING_RUN_FILES_H_

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill::testing {

// The records of `run`/metrics.jsonl whose "type" is `type` ("train",
// "epoch"), or all of them for "". A run may be writing the file: a last
// line without its newline is not read yet. A complete line that is not a
// JSON object is a test failure.
std::vector<nlohmann::json> MetricsRecords(const std::filesystem::path& run,
                                           const std::string& type = "");

// The "step" of the last "train" record; 0 when there is none yet.
int64_t LastTrainStep(const std::filesystem::path& run);

// `run`/summary.json; a test failure (and null) when it is missing or
// malformed.
nlohmann::json Summary(const std::filesystem::path& run);

// Checks that loss term `term` lies in the open interval (low, high) in
// `run`'s summary and in each of its "train" records, which it returns.
std::vector<nlohmann::json> ExpectLossTermWithin(
    const std::filesystem::path& run, const std::string& term, double low,
    double high);

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_RUN_FILES_H_
