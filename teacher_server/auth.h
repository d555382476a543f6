// Shared-secret authentication of teacher calls: every call must carry the
// metadata `authorization: Bearer <token>`. Stateless; safe from any thread.
#ifndef DISTILL_TEACHER_SERVER_AUTH_H_
#define DISTILL_TEACHER_SERVER_AUTH_H_

#include <grpcpp/support/string_ref.h>

#include <map>
#include <string>

#include "absl/status/status.h"

namespace distill::teacher {

// OK when `token` is empty (authentication off) or the metadata carries
// exactly that bearer token; otherwise Unauthenticated naming what is wrong
// (missing metadata, another scheme, a wrong token). Compares in constant
// time.
absl::Status CheckBearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    const std::string& token);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_AUTH_H_
