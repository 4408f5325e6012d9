#include "kernels/core/cpu_features.h"

namespace tandem {

bool CpuHasAvx2Fma() {
  static const bool has = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace tandem
