#include "losses/plugin_loader.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <gelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "losses/plugin.h"

namespace distill::losses {
namespace {

using EntryFn = DistillLossPluginEntry (*)();

std::string DlError() {
  const char* error = dlerror();
  return error != nullptr ? error : "unknown dlopen error";
}

// The API version in the plugin mark (DISTILL_LOSS_PLUGIN_SECTION), read
// from the file with libelf: nothing of the plugin runs before it is known.
absl::StatusOr<int> MarkedApiVersion(const std::string& path) {
  const auto cannot = [&path](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load loss plugin ", path, ": ", why));
  };
  if (elf_version(EV_CURRENT) == EV_NONE) {
    return absl::InternalError(
        absl::StrCat("libelf: ", elf_errmsg(elf_errno())));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cannot(std::strerror(errno));
  Elf* elf = elf_begin(fd, ELF_C_READ, nullptr);
  absl::Cleanup close_file = [fd, elf] {
    if (elf != nullptr) elf_end(elf);
    close(fd);
  };
  GElf_Ehdr header;
  if (elf == nullptr || elf_kind(elf) != ELF_K_ELF ||
      gelf_getehdr(elf, &header) == nullptr) {
    return cannot("not an ELF file");
  }
  if (header.e_type != ET_DYN) return cannot("not an ELF shared library");
  if (header.e_ident[EI_DATA] !=
      (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB)) {
    return cannot("an ELF file of the other byte order");
  }
  size_t names = 0;
  if (elf_getshdrstrndx(elf, &names) != 0) {
    return cannot(absl::StrCat("its section names are unreadable: ",
                               elf_errmsg(elf_errno())));
  }
  size_t sections = 0;
  if (elf_getshdrnum(elf, &sections) != 0) {
    return cannot(absl::StrCat("its section count is unreadable: ",
                               elf_errmsg(elf_errno())));
  }
  struct stat file {};
  if (fstat(fd, &file) != 0) return cannot(std::strerror(errno));
  const uint64_t table_end =
      header.e_shoff + uint64_t{sections} * header.e_shentsize;
  if (header.e_shoff > static_cast<uint64_t>(file.st_size) ||
      table_end > static_cast<uint64_t>(file.st_size)) {
    return cannot(absl::StrCat("its header places the section table at byte ",
                               header.e_shoff, ", past the end of the file (",
                               file.st_size, " bytes)"));
  }
  std::optional<DistillLossPluginMark> mark;
  size_t seen = 1;  // elf_nextscn skips section 0
  for (Elf_Scn* section = elf_nextscn(elf, nullptr); section != nullptr;
       section = elf_nextscn(elf, section), ++seen) {
    GElf_Shdr section_header;
    if (gelf_getshdr(section, &section_header) == nullptr) {
      return cannot(absl::StrCat("a section header is unreadable: ",
                                 elf_errmsg(elf_errno())));
    }
    const char* name = elf_strptr(elf, names, section_header.sh_name);
    if (name == nullptr ||
        std::strcmp(name, DISTILL_LOSS_PLUGIN_SECTION) != 0) {
      continue;
    }
    Elf_Data* data = section_header.sh_type == SHT_PROGBITS
                         ? elf_getdata(section, nullptr)
                         : nullptr;
    if (data == nullptr || data->d_buf == nullptr) {
      return cannot(absl::StrCat("its " DISTILL_LOSS_PLUGIN_SECTION
                                 " section is unreadable"));
    }
    // Two marks (two plugins linked into one library) make a section of
    // twice the size.
    if (mark.has_value() || data->d_size != sizeof(DistillLossPluginMark)) {
      return cannot(absl::StrCat(
          "its " DISTILL_LOSS_PLUGIN_SECTION " section holds ",
          mark.has_value() ? 2 * sizeof(DistillLossPluginMark) : data->d_size,
          " bytes, not one plugin mark (", sizeof(DistillLossPluginMark), ")"));
    }
    mark.emplace();
    std::memcpy(&*mark, data->d_buf, sizeof(DistillLossPluginMark));
    if (std::memcmp(mark->magic, "distill", sizeof(mark->magic)) != 0) {
      return cannot("its " DISTILL_LOSS_PLUGIN_SECTION
                    " section is not a distill plugin mark");
    }
  }
  // A header that points its section table past the file yields none.
  if (seen < sections) {
    return cannot(absl::StrCat("its header names ", sections, " sections but ",
                               seen - 1, " can be read"));
  }
  if (!mark.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " is not a distill loss plugin: it has no " DISTILL_LOSS_PLUGIN_SECTION
        " section (DISTILL_LOSS_PLUGIN puts one there since plugin API "
        "version 3; rebuild a plugin made for an older release against this "
        "release's headers)"));
  }
  return mark->api_version;
}

absl::Status OtherVersion(const std::string& path, int version) {
  return absl::FailedPreconditionError(absl::StrCat(
      "loss plugin ", path, " was built for plugin API version ", version,
      " but this distill has version ", kDistillLossPluginApiVersion,
      "; rebuild it against this release's headers"));
}

// Calls the plugin's register function on a staging registry, so a plugin
// whose second loss clashes leaves none of its losses behind.
absl::Status RegisterFrom(const std::string& path, LossPluginRegisterFn fn,
                          LossRegistry& registry) {
  LossRegistry staging;
  absl::Status status;
  try {
    status = fn(staging);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " threw while registering: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss plugin ", path, " threw while registering"));
  }
  if (!status.ok()) {
    return absl::Status(
        status.code() == absl::StatusCode::kAlreadyExists
            ? absl::StatusCode::kAlreadyExists
            : absl::StatusCode::kInvalidArgument,
        absl::StrCat("loss plugin ", path,
                     " failed to register its losses: ", status.message()));
  }
  std::vector<LossEntry> entries;
  for (const std::string& name : staging.Names()) {
    if (registry.Find(name).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("loss plugin ", path, " registers loss '", name,
                       "', which is already registered"));
    }
    absl::StatusOr<LossEntry> entry = staging.Find(name);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }
  for (LossEntry& entry : entries) {
    const std::string name = entry.name;
    absl::Status added = registry.Register(std::move(entry));
    if (!added.ok()) {
      // Only a concurrent load of another plugin can get here.
      return absl::AlreadyExistsError(
          absl::StrCat("loss plugin ", path, " registers loss '", name,
                       "', which is already registered"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadLossPlugin(const std::string& path, LossRegistry& registry) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("loss plugin not found: ", path));
  }
  // dlopen searches the library path for a bare name; "./" keeps a relative
  // path relative to the current directory, as documented.
  const std::string open_path =
      path.find('/') == std::string::npos ? "./" + path : path;
  // The version first: loading runs the plugin's static constructors.
  absl::StatusOr<int> marked = MarkedApiVersion(path);
  if (!marked.ok()) return marked.status();
  if (*marked != kDistillLossPluginApiVersion) {
    return OtherVersion(path, *marked);
  }
  // RTLD_LOCAL: two plugins may use the same internal symbol names.
  void* handle = dlopen(open_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load loss plugin ", path, ": ", DlError()));
  }
  dlerror();
  void* symbol = dlsym(handle, DISTILL_LOSS_PLUGIN_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    dlclose(handle);
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a distill loss plugin: it exports no ",
                     DISTILL_LOSS_PLUGIN_ENTRY_SYMBOL));
  }
  // The entry is the plugin's code: whatever it throws stays here.
  DistillLossPluginEntry entry{};
  try {
    entry = reinterpret_cast<EntryFn>(symbol)();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " threw in its entry function: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss plugin ", path, " threw in its entry function"));
  }
  if (entry.api_version != kDistillLossPluginApiVersion) {
    dlclose(handle);
    return OtherVersion(path, entry.api_version);
  }
  if (entry.register_losses == nullptr) {
    dlclose(handle);
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " has no register function in its entry"));
  }
  // From here on the handle is never closed, not even on failure: the
  // staging registry and any loss already made may hold the plugin's code.
  return RegisterFrom(path, entry.register_losses, registry);
}

}  // namespace distill::losses
