#include "student/model.h"

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "common/zip_check.h"

namespace distill::student {
namespace {

constexpr char kDescriptionKey[] = "model_description";

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelSpec& spec,
                                                     const ZooInput& input) {
  std::unique_ptr<Model> model(new Model);
  if (!spec.torchscript.empty()) {
    if (!std::filesystem::exists(spec.torchscript)) {
      return absl::NotFoundError(
          absl::StrCat("TorchScript model file not found: ", spec.torchscript));
    }
    // LibTorch does not check the archive's CRC-32s and crashes on some
    // damaged ones: check them first.
    absl::Status whole = CheckZipArchive(spec.torchscript);
    if (!whole.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("TorchScript model ", spec.torchscript,
                       " is unreadable (", whole.message(), ")"));
    }
    auto loaded =
        TorchCall(absl::StrCat("loading TorchScript model ", spec.torchscript),
                  [&] { return torch::jit::load(spec.torchscript); });
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(loaded.status().message());
    }
    model->script_ = std::move(loaded).value();
    model->description_ = absl::StrCat(
        "torchscript:",
        std::filesystem::path(spec.torchscript).filename().string());
    return model;
  }
  DISTILL_ASSIGN_OR_RETURN(model->zoo_,
                           CreateZooModel(spec.arch, spec.options, input));
  model->description_ = spec.arch;
  return model;
}

torch::Tensor Model::forward(const torch::Tensor& inputs) {
  if (script_) return script_->forward({inputs}).toTensor();
  return zoo_->forward(inputs);
}

void Model::train(bool on) {
  if (script_) {
    script_->train(on);
  } else {
    zoo_->train(on);
  }
}

std::vector<torch::Tensor> Model::parameters() {
  std::vector<torch::Tensor> out;
  for (auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> Model::named_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (script_) {
    for (const auto& p : script_->named_parameters(/*recurse=*/true)) {
      out.emplace_back(p.name, p.value);
    }
  } else {
    for (const auto& p : zoo_->named_parameters(/*recurse=*/true)) {
      out.emplace_back(p.key(), p.value());
    }
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> Model::named_buffers() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (script_) {
    for (const auto& b : script_->named_buffers(/*recurse=*/true)) {
      out.emplace_back(b.name, b.value);
    }
  } else {
    for (const auto& b : zoo_->named_buffers(/*recurse=*/true)) {
      out.emplace_back(b.key(), b.value());
    }
  }
  return out;
}

int64_t Model::num_parameters() {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

absl::Status Model::Save(torch::serialize::OutputArchive& archive) {
  return TorchCall("saving model weights", [&] {
    torch::NoGradGuard no_grad;
    archive.write(kDescriptionKey, c10::IValue(description_));
    for (const auto& [name, t] : named_parameters()) {
      archive.write(absl::StrCat("model/", name), t.detach());
    }
    for (const auto& [name, t] : named_buffers()) {
      archive.write(absl::StrCat("model/", name), t.detach(),
                    /*is_buffer=*/true);
    }
  });
}

absl::Status Model::Load(torch::serialize::InputArchive& archive,
                         const std::string& source) {
  c10::IValue stored;
  if (!archive.try_read(kDescriptionKey, stored) || !stored.isString()) {
    return absl::FailedPreconditionError(
        absl::StrCat(source, " holds no model weights written by distill"));
  }
  if (stored.toStringRef() != description_) {
    return absl::FailedPreconditionError(
        absl::StrCat(source, " was written for model '", stored.toStringRef(),
                     "' but the config asks for '", description_, "'"));
  }
  auto copy_all = [&](std::vector<std::pair<std::string, torch::Tensor>> named)
      -> absl::Status {
    for (auto& [name, tensor] : named) {
      torch::Tensor value;
      if (!archive.try_read(absl::StrCat("model/", name), value)) {
        return absl::FailedPreconditionError(
            absl::StrCat(source, " has no tensor '", name, "' for model '",
                         description_, "'"));
      }
      if (value.sizes() != tensor.sizes()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor '", name, "' has shape ", ShapeString(value.sizes()),
            " in ", source, " but ", ShapeString(tensor.sizes()), " in model '",
            description_,
            "' (a checkpoint of the same architecture with other options?)"));
      }
      torch::NoGradGuard no_grad;
      tensor.copy_(value);
    }
    return absl::OkStatus();
  };
  return TorchCall(absl::StrCat("loading weights from ", source), [&] {
    DISTILL_RETURN_IF_ERROR(copy_all(named_parameters()));
    return copy_all(named_buffers());
  });
}

absl::Status Model::LoadFile(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("weights file not found: ", path));
  }
  torch::serialize::InputArchive archive;
  absl::Status loaded = CheckZipArchive(path);
  if (loaded.ok()) {
    loaded = TorchCall(absl::StrCat("reading ", path),
                       [&] { archive.load_from(path); });
  }
  if (!loaded.ok()) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a weights file written by distill (",
                     loaded.message(), ")"));
  }
  return Load(archive, path);
}

absl::Status Model::SaveFile(const std::string& path) {
  return WriteFileAtomically(path, [&](const std::string& tmp) {
    torch::serialize::OutputArchive archive;
    DISTILL_RETURN_IF_ERROR(Save(archive));
    return TorchCall(absl::StrCat("writing ", path),
                     [&] { archive.save_to(tmp); });
  });
}

absl::Status Model::SaveTorchScript(const std::string& path) {
  if (!script_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", description_, "' is not a TorchScript model"));
  }
  return WriteFileAtomically(path, [&](const std::string& tmp) {
    return TorchCall(absl::StrCat("writing TorchScript model ", path),
                     [&] { script_->save(tmp); });
  });
}

}  // namespace distill::student
