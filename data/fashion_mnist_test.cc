#include "data/fashion_mnist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/testing/idx_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::data {
namespace {

using ::distill::testing::IdxBytes;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::distill::testing::WriteRaw;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kDir[] = "/usr/share/datasets/fashion-mnist";

// Decompresses a whole .gz file independently of the code under test.
std::vector<uint8_t> Gunzip(const std::string& path) {
  std::vector<uint8_t> bytes;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return bytes;
  uint8_t buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) {
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
  gzclose(file);
  return bytes;
}

class FashionMnistTest : public ::distill::testing::ScratchDirTest {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(kDir) +
                                 "/t10k-labels-idx1-ubyte.gz")) {
      GTEST_SKIP() << "dataset-fashion-mnist is not installed in " << kDir;
    }
  }

  const std::string tmp_ = dir_.string();
};

TEST_F(FashionMnistTest, LoadsTrainSplit) {
  FashionMnistOptions options;
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadFashionMnist(options);
  ASSERT_THAT(dataset, IsOk());
  EXPECT_EQ((*dataset)->size(), 60000);
  EXPECT_EQ((*dataset)->num_classes(), 10);
  EXPECT_THAT((*dataset)->input_shape(), ElementsAre(1, 28, 28));
  EXPECT_EQ((*dataset)->name(), "fashion-mnist train");
}

TEST_F(FashionMnistTest, TestSplitMatchesTheRawFiles) {
  FashionMnistOptions options;
  options.train = false;
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadFashionMnist(options);
  ASSERT_THAT(dataset, IsOk());
  EXPECT_EQ((*dataset)->size(), 10000);

  const std::vector<uint8_t> labels =
      Gunzip(std::string(kDir) + "/t10k-labels-idx1-ubyte.gz");
  const std::vector<uint8_t> images =
      Gunzip(std::string(kDir) + "/t10k-images-idx3-ubyte.gz");
  ASSERT_EQ(labels.size(), 8u + 10000);
  ASSERT_EQ(images.size(), 16u + 10000 * 784);
  // Fashion-MNIST's first test image is an ankle boot (class 9).
  EXPECT_EQ(labels[8], 9);
  // A bright pixel of test image 3, so the check covers more than zeros.
  const int64_t sample = 3;
  int64_t pixel = 0;
  while (images[16 + sample * 784 + pixel] < 100) ++pixel;
  const uint8_t raw = images[16 + sample * 784 + pixel];

  absl::StatusOr<Batch> batch = (*dataset)->Get({0, sample});
  ASSERT_THAT(batch, IsOk());
  EXPECT_EQ(batch->labels[0].item<int64_t>(), labels[8]);
  EXPECT_EQ(batch->labels[1].item<int64_t>(), labels[8 + sample]);
  EXPECT_THAT(batch->ids.sizes(), ElementsAre(2));
  EXPECT_EQ(batch->ids[1].item<int64_t>(), sample);
  ASSERT_THAT(batch->inputs.sizes(), ElementsAre(2, 1, 28, 28));
  EXPECT_EQ(batch->inputs.scalar_type(), torch::kFloat);
  const float expected = (raw / 255.0f - 0.2860f) / 0.3530f;
  EXPECT_FLOAT_EQ(batch->inputs[1].flatten()[pixel].item<float>(), expected);
  EXPECT_FLOAT_EQ((*dataset)->background_value(), -0.2860f / 0.3530f);
}

TEST_F(FashionMnistTest, LimitKeepsTheFirstSamples) {
  FashionMnistOptions options;
  options.train = false;
  options.limit = 100;
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadFashionMnist(options);
  ASSERT_THAT(dataset, IsOk());
  EXPECT_EQ((*dataset)->size(), 100);
  EXPECT_THAT((*dataset)->Get({99}), IsOk());
  EXPECT_THAT(
      (*dataset)->Get({5, 100}),
      StatusIs(absl::StatusCode::kOutOfRange,
               AllOf(HasSubstr("100"), HasSubstr("fashion-mnist test"))));
  EXPECT_THAT((*dataset)->Get({-1}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("-1")));
}

TEST_F(FashionMnistTest, ReadsRawFilesWithoutGz) {
  WriteRaw(tmp_ + "/t10k-images-idx3-ubyte",
           Gunzip(std::string(kDir) + "/t10k-images-idx3-ubyte.gz"));
  WriteRaw(tmp_ + "/t10k-labels-idx1-ubyte",
           Gunzip(std::string(kDir) + "/t10k-labels-idx1-ubyte.gz"));
  FashionMnistOptions options;
  options.dir = tmp_;
  options.train = false;
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadFashionMnist(options);
  ASSERT_THAT(dataset, IsOk());
  EXPECT_EQ((*dataset)->size(), 10000);
}

TEST_F(FashionMnistTest, TruncatedImageFileIsDataLoss) {
  std::vector<uint8_t> images =
      Gunzip(std::string(kDir) + "/t10k-images-idx3-ubyte.gz");
  images.resize(images.size() - 1000);
  const std::string images_path = tmp_ + "/t10k-images-idx3-ubyte";
  WriteRaw(images_path, images);
  std::filesystem::copy_file(std::string(kDir) + "/t10k-labels-idx1-ubyte.gz",
                             tmp_ + "/t10k-labels-idx1-ubyte.gz");
  FashionMnistOptions options;
  options.dir = tmp_;
  options.train = false;
  EXPECT_THAT(LoadFashionMnist(options),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("truncated"), HasSubstr(images_path))));
}

TEST_F(FashionMnistTest, MismatchedCountsAreDataLoss) {
  std::vector<uint8_t> labels =
      Gunzip(std::string(kDir) + "/t10k-labels-idx1-ubyte.gz");
  // A well-formed labels file with 9999 items.
  const std::vector<uint8_t> fewer(labels.begin() + 8, labels.end() - 1);
  WriteRaw(tmp_ + "/t10k-labels-idx1-ubyte", IdxBytes(0x08, {9999}, fewer));
  std::filesystem::copy_file(std::string(kDir) + "/t10k-images-idx3-ubyte.gz",
                             tmp_ + "/t10k-images-idx3-ubyte.gz");
  FashionMnistOptions options;
  options.dir = tmp_;
  options.train = false;
  EXPECT_THAT(
      LoadFashionMnist(options),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("10000 images"), HasSubstr("9999 labels"),
                     HasSubstr(tmp_ + "/t10k-labels-idx1-ubyte"))));
}

TEST_F(FashionMnistTest, WrongImageSizeIsDataLoss) {
  const std::string images_path = tmp_ + "/train-images-idx3-ubyte";
  WriteRaw(images_path,
           IdxBytes(0x08, {2, 32, 32}, std::vector<uint8_t>(2048, 0)));
  WriteRaw(tmp_ + "/train-labels-idx1-ubyte", IdxBytes(0x08, {2}, {1, 2}));
  FashionMnistOptions options;
  options.dir = tmp_;
  EXPECT_THAT(LoadFashionMnist(options),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("2x32x32"), HasSubstr(images_path))));
}

TEST_F(FashionMnistTest, LabelOutOfRangeIsDataLoss) {
  const std::string labels_path = tmp_ + "/train-labels-idx1-ubyte";
  WriteRaw(tmp_ + "/train-images-idx3-ubyte",
           IdxBytes(0x08, {2, 28, 28}, std::vector<uint8_t>(2 * 784, 0)));
  WriteRaw(labels_path, IdxBytes(0x08, {2}, {3, 10}));
  FashionMnistOptions options;
  options.dir = tmp_;
  EXPECT_THAT(LoadFashionMnist(options),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("label 10"), HasSubstr(labels_path))));
}

TEST_F(FashionMnistTest, MissingDirectoryIsNotFound) {
  FashionMnistOptions options;
  options.dir = tmp_ + "/absent";
  EXPECT_THAT(LoadFashionMnist(options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(options.dir)));
}

TEST_F(FashionMnistTest, MissingFileIsNotFound) {
  FashionMnistOptions options;
  options.dir = tmp_;
  EXPECT_THAT(LoadFashionMnist(options),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr(tmp_ + "/train-images-idx3-ubyte.gz")));
}

}  // namespace
}  // namespace distill::data
