# The packages every part of the build needs, found once: by the main
# project and by the fuzz targets' project (tests/fuzz/clang/), which links
# the main build's libraries.
find_package(Torch REQUIRED)
find_package(Protobuf CONFIG QUIET)
if(NOT Protobuf_FOUND)
  find_package(Protobuf REQUIRED)
endif()
find_package(absl CONFIG REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(Threads REQUIRED)
# The teacher server: Prometheus metrics and SHA-256 of model files.
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(OpenSSL REQUIRED)
