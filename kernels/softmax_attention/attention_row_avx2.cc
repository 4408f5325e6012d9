// The VectorKernels compiled with -mavx2 (see CMakeLists.txt): 8-wide vectors for the same
// source, hence the same bits as the baseline build, only faster.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/core/contract.h"
#include "kernels/softmax_attention/attention_row.h"

namespace tandem::kernels::cpu {
namespace avx2 {
#include "kernels/softmax_attention/attention_row_impl.inc"
}  // namespace avx2

const VectorKernels& Avx2Kernels() { return avx2::kVectorKernels; }

}  // namespace tandem::kernels::cpu
