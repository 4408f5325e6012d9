# Finds Tandem's third-party dependencies (Debian 12 packages; see scripts/install_deps.sh).
find_package(Threads REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)

if(TANDEM_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()

if(TANDEM_SERVICES)
  find_package(Protobuf REQUIRED)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
endif()

# CUDA: AUTO enables it when a CUDA compiler is found.
set(TANDEM_HAVE_CUDA OFF)
if(NOT TANDEM_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90a 80)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(TANDEM_HAVE_CUDA ON)
  elseif(TANDEM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TANDEM_CUDA=ON but no CUDA compiler was found")
  endif()
endif()

# NCCL (the trainer's GPU data parallelism): with CUDA, when nccl.h and libnccl are found (the
# CUDA toolkit's directories, the system's, or NCCL_ROOT). TANDEM_NCCL=OFF leaves it out.
option(TANDEM_NCCL "Build NCCL data parallelism for the GPU trainer (when NCCL is found)" ON)
set(TANDEM_HAVE_NCCL OFF)
if(TANDEM_HAVE_CUDA AND TANDEM_NCCL)
  find_path(TANDEM_NCCL_INCLUDE_DIR nccl.h
            HINTS $ENV{NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS})
  find_library(TANDEM_NCCL_LIBRARY nccl
               HINTS $ENV{NCCL_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR})
  if(TANDEM_NCCL_INCLUDE_DIR AND TANDEM_NCCL_LIBRARY)
    set(TANDEM_HAVE_NCCL ON)
  else()
    message(STATUS "Tandem: NCCL not found; the GPU trainer runs on one GPU only")
  endif()
endif()

if(TANDEM_TESTS)
  find_package(GTest REQUIRED)
endif()
if(TANDEM_BENCH)
  find_package(benchmark REQUIRED)
  find_package(BLAS)
endif()
