// Run-time CPU feature detection, so one binary picks the AVX2/FMA kernels where they exist and
// the scalar ones elsewhere. Within one machine the choice is fixed, which keeps results bitwise
// reproducible (rule 1): the choice never depends on the problem size.
#pragma once

namespace tandem {

// True when the CPU supports AVX2 and FMA.
bool CpuHasAvx2Fma();

}  // namespace tandem
