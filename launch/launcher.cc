#include "launch/launcher.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/net.h"
#include "common/status.h"
#include "launch/health.h"
#include "launch/restart_policy.h"
#include "launch/supervisor.h"

namespace distill::launch {
namespace {

namespace fs = std::filesystem;

// What the teacher server's health service calls the teacher.
constexpr char kTeacherService[] = "distill.v1.Teacher";
// How often teachers' port files and health are looked at while they start.
constexpr absl::Duration kTeacherPoll = absl::Milliseconds(100);

enum class Outcome { kDone, kFailed, kInterrupted };

struct AttemptResult {
  Outcome outcome = Outcome::kDone;
  // What failed (kFailed).
  std::string cause;
  // The launcher's exit code (kDone, kInterrupted).
  int exit_code = 0;
};

void Say(const LaunchOptions& o, const std::string& text) {
  const std::string line = absl::StrCat("distill_launch: ", text, "\n");
  (void)!::write(o.err_fd, line.data(), line.size());
}

// The port a teacher wrote ("<port>\n"), once the file is there.
std::optional<int> ReadPortFile(const fs::path& path) {
  const absl::StatusOr<std::string> bytes = ReadFile(path.string());
  if (!bytes.ok() || bytes->empty()) return std::nullopt;
  const std::string text = bytes->substr(0, bytes->find('\n'));
  int port = 0;
  if (!absl::SimpleAtoi(text, &port) || port < 1 || port > 65535) {
    return std::nullopt;
  }
  return port;
}

bool HasResumeFlag(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a == "--resume" || a == "-resume" || a.rfind("--resume=", 0) == 0 ||
           a.rfind("-resume=", 0) == 0;
  });
}

int FirstSignal(const Events& e) {
  return e.signals.empty() ? 0 : e.signals[0];
}

class Attempt {
 public:
  Attempt(const LaunchOptions& o, const HealthCheckSecurity& security,
          int number, Supervisor& sup)
      : o_(o), security_(security), number_(number), sup_(sup) {}

  absl::StatusOr<AttemptResult> Run() {
    DISTILL_ASSIGN_OR_RETURN(std::optional<AttemptResult> early,
                             StartTeachers());
    if (early) return *early;
    DISTILL_RETURN_IF_ERROR(StartRanks());
    DISTILL_RETURN_IF_ERROR(WriteRecord());
    return Supervise();
  }

 private:
  // Starts the teachers and waits until each serves. A result when the
  // attempt ends here (a teacher failed, or a signal came).
  absl::StatusOr<std::optional<AttemptResult>> StartTeachers() {
    std::vector<fs::path> port_files;
    for (int i = 0; i < o_.teachers; ++i) {
      const fs::path port_file =
          fs::path(o_.work_dir) /
          absl::StrCat("teacher-", number_, "-", i, ".port");
      fs::remove(port_file);
      ChildSpec spec{"teacher",
                     i,
                     {o_.teacher_server_path, "--host", o_.teacher_host,
                      "--port", "0", "--port_file", port_file.string()},
                     {}};
      spec.argv.insert(spec.argv.end(), o_.teacher_args.begin(),
                       o_.teacher_args.end());
      DISTILL_ASSIGN_OR_RETURN(int id, sup_.Start(spec));
      teacher_ids_.push_back(id);
      port_files.push_back(port_file);
    }
    endpoints_.assign(o_.teachers, "");
    // Why each teacher is not serving yet, for the timeout's message.
    std::vector<std::string> last_error(o_.teachers);
    for (int i = 0; i < o_.teachers; ++i) {
      last_error[i] =
          absl::StrCat("it wrote no port file ", port_files[i].string());
    }
    const absl::Time deadline = absl::Now() + o_.teacher_timeout;
    int ready = 0;
    while (ready < o_.teachers) {
      const Events events = sup_.Wait(kTeacherPoll);
      if (const int sig = FirstSignal(events)) {
        Say(o_, absl::StrCat("got SIG", ::sigabbrev_np(sig),
                             " while teachers were starting; stopping"));
        sup_.StopAll(o_.stop_grace);
        return AttemptResult{Outcome::kInterrupted, "", 128 + sig};
      }
      if (!events.exits.empty()) {
        const ChildExit& e = events.exits.front();
        return Fail(DescribeExit(sup_.name(e.id), e.wait_status) +
                    " before it was serving");
      }
      for (int i = 0; i < o_.teachers; ++i) {
        if (!endpoints_[i].empty()) continue;
        const std::optional<int> port = ReadPortFile(port_files[i]);
        if (!port) continue;
        const std::string endpoint =
            absl::StrCat(absl::StrContains(o_.teacher_host, ':')
                             ? absl::StrCat("[", o_.teacher_host, "]")
                             : o_.teacher_host,
                         ":", *port);
        const absl::Status serving = CheckServing(
            endpoint, kTeacherService, absl::Milliseconds(500), security_);
        if (!serving.ok()) {
          last_error[i] =
              absl::StrCat("last health check: ", serving.message());
          continue;
        }
        endpoints_[i] = endpoint;
        ++ready;
        Say(o_, absl::StrCat("teacher ", i, " is serving at ", endpoint));
      }
      if (ready < o_.teachers && absl::Now() >= deadline) {
        for (int i = 0; i < o_.teachers; ++i) {
          if (endpoints_[i].empty()) {
            return Fail(absl::StrCat("teacher ", i, " was not serving after ",
                                     absl::FormatDuration(o_.teacher_timeout),
                                     "; ", last_error[i]));
          }
        }
      }
    }
    return std::optional<AttemptResult>();
  }

  absl::Status StartRanks() {
    master_port_ = o_.master_port;
    if (master_port_ == 0) {
      DISTILL_ASSIGN_OR_RETURN(master_port_, FreeLoopbackPort());
    }
    std::vector<std::string> args = o_.distill_args;
    if (number_ > 0 && !HasResumeFlag(args)) args.push_back("--resume");
    if (o_.teachers > 0) {
      args.push_back("--teacher_endpoints=" + absl::StrJoin(endpoints_, ","));
      if (!o_.teacher_tls_ca_file.empty()) {
        args.push_back("--teacher_tls_ca=" + o_.teacher_tls_ca_file);
      }
      if (!o_.teacher_token_file.empty()) {
        args.push_back("--teacher_token_file=" + o_.teacher_token_file);
      }
    }
    for (int r = 0; r < o_.nproc; ++r) {
      ChildSpec spec{"rank", r, {o_.distill_path}, {}};
      spec.argv.insert(spec.argv.end(), args.begin(), args.end());
      spec.env = {absl::StrCat("RANK=", r),
                  absl::StrCat("WORLD_SIZE=", o_.nproc),
                  absl::StrCat("LOCAL_RANK=", r),
                  absl::StrCat("LOCAL_WORLD_SIZE=", o_.nproc),
                  "MASTER_ADDR=127.0.0.1",
                  absl::StrCat("MASTER_PORT=", master_port_),
                  absl::StrCat("TORCHELASTIC_RESTART_COUNT=", number_)};
      DISTILL_ASSIGN_OR_RETURN(int id, sup_.Start(spec));
      rank_ids_.push_back(id);
    }
    return absl::OkStatus();
  }

  absl::Status WriteRecord() {
    nlohmann::json record = {{"attempt", number_},
                             {"launcher_pid", ::getpid()},
                             {"master_port", master_port_},
                             {"ranks", nlohmann::json::array()},
                             {"teachers", nlohmann::json::array()}};
    for (int r = 0; r < o_.nproc; ++r) {
      record["ranks"].push_back({{"rank", r}, {"pid", sup_.pid(rank_ids_[r])}});
    }
    for (int i = 0; i < o_.teachers; ++i) {
      record["teachers"].push_back({{"teacher", i},
                                    {"pid", sup_.pid(teacher_ids_[i])},
                                    {"endpoint", endpoints_[i]}});
    }
    return WriteStringAtomically(
        (fs::path(o_.work_dir) / absl::StrCat("attempt-", number_, ".json"))
            .string(),
        record.dump(2) + "\n");
  }

  bool IsRank(int id) const {
    return std::find(rank_ids_.begin(), rank_ids_.end(), id) != rank_ids_.end();
  }

  bool RanksRunning() const {
    return std::any_of(rank_ids_.begin(), rank_ids_.end(),
                       [&](int id) { return sup_.running(id); });
  }

  AttemptResult Supervise() {
    int stop_signal = 0;
    std::vector<int> rank_codes(o_.nproc, 0);
    while (RanksRunning()) {
      const Events events = sup_.Wait(absl::InfiniteDuration());
      for (int sig : events.signals) {
        if (stop_signal != 0) {
          Say(o_, absl::StrCat("got SIG", ::sigabbrev_np(sig),
                               " again; killing every process"));
          sup_.StopAll(absl::ZeroDuration());
          return {Outcome::kInterrupted, "", 128 + sig};
        }
        stop_signal = sig;
        if (sig == SIGHUP) {
          // The terminal went away: stop as for SIGTERM. Ranks do not
          // handle SIGHUP, whose default would kill them unsaved.
          Say(o_,
              "got SIGHUP; passing SIGTERM to the ranks, which "
              "checkpoint and stop");
          for (int id : rank_ids_) sup_.Signal(id, SIGTERM);
          continue;
        }
        Say(o_, absl::StrCat(
                    "got SIG", ::sigabbrev_np(sig),
                    "; passing it to the ranks, which checkpoint and stop"));
        for (int id : rank_ids_) sup_.Signal(id, sig);
      }
      const ChildExit* failure = nullptr;
      for (const ChildExit& e : events.exits) {
        const bool rank = IsRank(e.id);
        if (rank) rank_codes[sup_.spec(e.id).index] = ExitCode(e.wait_status);
        if (stop_signal != 0) continue;  // Stopping: exits are expected.
        if (rank && ExitCode(e.wait_status) == 0) continue;
        // When several went down together, one killed by a signal is the
        // likelier cause: the others fail because it is gone.
        if (failure == nullptr || (WIFSIGNALED(e.wait_status) &&
                                   !WIFSIGNALED(failure->wait_status))) {
          failure = &e;
        }
      }
      if (failure != nullptr) {
        return Fail(DescribeExit(sup_.name(failure->id), failure->wait_status));
      }
    }
    sup_.StopAll(o_.stop_grace);  // The teachers.
    for (int code : rank_codes) {
      if (code != 0) return {Outcome::kInterrupted, "", code};
    }
    return {Outcome::kDone, "", 0};
  }

  AttemptResult Fail(const std::string& cause) {
    Say(o_, cause + "; stopping the others");
    sup_.StopAll(o_.stop_grace);
    return {Outcome::kFailed, cause, 1};
  }

  const LaunchOptions& o_;
  const HealthCheckSecurity& security_;
  const int number_;
  Supervisor& sup_;
  std::vector<int> teacher_ids_, rank_ids_;
  std::vector<std::string> endpoints_;
  int master_port_ = 0;
};

absl::Status Validate(const LaunchOptions& o) {
  if (o.nproc < 1) return absl::InvalidArgumentError("--nproc must be >= 1");
  if (o.teachers < 0)
    return absl::InvalidArgumentError("--teachers must be >= 0");
  if (o.max_restarts < 0) {
    return absl::InvalidArgumentError("--max_restarts must be >= 0");
  }
  if (o.distill_path.empty()) {
    return absl::InvalidArgumentError("no distill program given");
  }
  if (o.teachers > 0 && o.teacher_server_path.empty()) {
    return absl::InvalidArgumentError("no teacher_server program given");
  }
  if (o.teacher_host.empty()) {
    return absl::InvalidArgumentError("--teacher_host is empty");
  }
  for (const std::string& arg : o.teacher_args) {
    if (arg == "--host" || arg == "-host" || absl::StartsWith(arg, "--host=") ||
        absl::StartsWith(arg, "-host=")) {
      return absl::InvalidArgumentError(
          "--teacher_args sets --host; give the teachers' address as "
          "--teacher_host, where the health checks and the ranks reach them");
    }
  }
  if (!fs::is_directory(o.work_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("work directory ", o.work_dir, " does not exist"));
  }
  return absl::OkStatus();
}

// The CA and token the health checks use, read once; an unreadable or empty
// file is refused before anything starts.
absl::StatusOr<HealthCheckSecurity> ReadSecurity(const LaunchOptions& o) {
  HealthCheckSecurity security;
  const auto read = [](const std::string& flag, const std::string& path,
                       std::string& into) -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    absl::StatusOr<std::string> bytes = ReadFile(path);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": ", bytes.status().message()));
    }
    into = std::string(absl::StripAsciiWhitespace(*bytes));
    if (into.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, " is empty"));
    }
    return absl::OkStatus();
  };
  DISTILL_RETURN_IF_ERROR(
      read("--teacher_tls_ca", o.teacher_tls_ca_file, security.tls_ca_pem));
  DISTILL_RETURN_IF_ERROR(
      read("--teacher_token_file", o.teacher_token_file, security.token));
  return security;
}

}  // namespace

absl::StatusOr<int> RunLaunch(const LaunchOptions& options) {
  DISTILL_RETURN_IF_ERROR(Validate(options));
  DISTILL_ASSIGN_OR_RETURN(const HealthCheckSecurity security,
                           ReadSecurity(options));
  RestartPolicy policy(options.max_restarts);
  for (int number = 0;; ++number) {
    DISTILL_ASSIGN_OR_RETURN(
        std::unique_ptr<Supervisor> sup,
        Supervisor::Create(options.out_fd, options.err_fd));
    Attempt attempt(options, security, number, *sup);
    DISTILL_ASSIGN_OR_RETURN(AttemptResult result, attempt.Run());
    switch (result.outcome) {
      case Outcome::kDone:
        Say(options, absl::StrCat("all ", options.nproc, " ranks finished"));
        return 0;
      case Outcome::kInterrupted:
        return result.exit_code;
      case Outcome::kFailed:
        break;
    }
    if (!policy.RecordFailure(result.cause)) {
      return absl::AbortedError(policy.GiveUpMessage());
    }
    Say(options,
        absl::StrCat("restarting the group from the newest checkpoint "
                     "(restart ",
                     policy.restarts(), " of ", policy.max_restarts(), ")"));
  }
}

}  // namespace distill::launch
