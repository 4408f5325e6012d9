# Shared compile settings for every Tandem target.
function(tandem_target_defaults target)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  # -ffp-contract=off: the compiler must never fuse a*b+c on its own. Whether it does can differ
  # between two inlined copies of one routine, or between the scalar and AVX2 builds of it, which
  # would break the bitwise promises of the numerics contract. Kernels that want FMA ask for it
  # explicitly (std::fma, _mm256_fmadd_ps).
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -ffp-contract=off>)
  if(TANDEM_NATIVE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  endif()
endfunction()

# Kernel sources that use AVX2/FMA intrinsics are compiled with these flags; the library picks the
# path at run time from the CPU's features, so binaries still run on CPUs without AVX2.
set(TANDEM_AVX2_FLAGS -mavx2 -mfma)

# A kernel op folder: kernels/<op>/ with <op>.h, <op>_cpu.cc (and later <op>.cu).
# Usage: tandem_kernel(<op> [DEPS other_kernel_targets...] [AVX2 file.cc ...])
function(tandem_kernel op)
  cmake_parse_arguments(K "" "" "DEPS;AVX2" ${ARGN})
  file(GLOB cc_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  set(target tandem_kernel_${op})
  if(NOT cc_sources)
    message(WARNING "kernels/${op}: no sources, target ${target} not defined")
    return()
  endif()
  add_library(${target} STATIC ${cc_sources})
  if(TANDEM_HAVE_CUDA)
    file(GLOB cu_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cu)
    if(cu_sources)
      target_sources(${target} PRIVATE ${cu_sources})
    endif()
  endif()
  tandem_target_defaults(${target})
  target_link_libraries(${target} PUBLIC tandem_core ${K_DEPS})
  foreach(f ${K_AVX2})
    set_source_files_properties(${f} PROPERTIES COMPILE_OPTIONS "${TANDEM_AVX2_FLAGS}")
  endforeach()
  set_property(GLOBAL APPEND PROPERTY TANDEM_KERNEL_TARGETS ${target})
endfunction()
