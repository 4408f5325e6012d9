// Run under `mpirun -np 2` (ctest: sft_mpi_test, label integration; with the argument `cuda`,
// sft_nccl_test, label gpu: one GPU per rank, gradients through the NCCL collective, the model
// config with GPU head sizes, exit 77 = skipped with fewer than 2 GPUs). Data-parallel SFT on 2
// ranks with b = 4 sequences each must match 1 rank with 2b = 8, the same global batch:
//  - the 2 ranks hold identical weight bits after every run (rank-ordered all-reduce, same AdamW);
//  - the per-step token counts are equal, and losses and final weights agree within tolerances.
// Why not bitwise: the loss is normalised by the global token count, so both runs compute the
// same sum over sequences — but in a different association. One rank accumulates
// ((mb0 + mb1) + mb2) + … over its micro-batches; two ranks sum (rank 0's micro-batches) +
// (rank 1's) in the all-reduce, and the packings differ (first-fit over 8 vs over 4 sequences).
// Every token's log-prob is bitwise the same (the forward is batch invariant), but fp32 gradient
// sums regroup, giving relative differences of a few fp32 ulps (~1e-7 · number of terms) that
// AdamW then carries into the weights (its update g/(sqrt(v)+eps) amplifies the relative error
// of gradients that nearly cancel). The bounds below are ~100x the observed differences and
// ~1000x below the size of one update (lr = 3e-3), so a wrong normalisation or a lost shard
// (a 2x or 0.5x gradient) still fails.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#ifdef TANDEM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "tests/trainer/sft_test_util.h"
#include "trainer/collectives.h"
#include "trainer/sft_loop.h"

namespace tandem::trainer {
namespace {

constexpr double kRelTol = 1e-5;
constexpr double kWeightAbsTol = 1e-5;

int failures = 0;

void Check(bool ok, int rank, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
}

uint64_t Fnv1a(const model::ModelWeights& w) {
  uint64_t h = 1469598103934665603ull;
  w.ForEachParameter([&](const std::string&, const Tensor& t) {
    const auto* p = static_cast<const unsigned char*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  });
  return h;
}

double MaxAbsDiff(const model::ModelWeights& a, const model::ModelWeights& b) {
  std::vector<Tensor> ta;
  a.ForEachParameter([&](const std::string&, const Tensor& t) { ta.push_back(t); });
  double worst = 0;
  size_t i = 0;
  b.ForEachParameter([&](const std::string&, const Tensor& t) {
    for (int64_t k = 0; k < t.numel(); ++k) {
      worst = std::max(worst,
                       std::fabs(static_cast<double>(t.data<float>()[k]) - ta[i].data<float>()[k]));
    }
    ++i;
  });
  return worst;
}

// Every rank gets rank 0's directory name.
std::string SharedTempDir(Collective& c) {
  char name[512] = {};
  if (c.Rank() == 0) {
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("tandem_sft_mpi_" + std::to_string(getpid())))
            .string();
    std::snprintf(name, sizeof(name), "%s", dir.c_str());
  }
  Check(c.Broadcast(name, sizeof(name), 0).ok(), c.Rank(), "Broadcast of the run directory");
  return name;
}

SftRunConfig Config(const std::string& output_dir, Device device) {
  std::vector<std::string> overrides = {"trainer.total_steps=5", "trainer.num_threads=1",
                                        "data.sequences_per_step=8"};
  // The GPU attention kernels take head_dim 32, 64 or 128 (the CPU config's is 8).
  if (device == Device::kCUDA) {
    overrides.push_back("model.config=configs/models/tiny-hybrid-addition-gpu.json");
  }
  return testing::SmallSftConfig(output_dir, overrides);
}

// The 1-rank run against the 2-rank run: token counts equal, losses, gradient norms and final
// weights within the tolerances above.
void CompareRuns(const SftResult& one, const SftResult& two, int rank) {
  Check(one.steps.size() == two.steps.size(), rank, "step counts");
  double worst_loss = 0, worst_norm = 0;
  for (size_t s = 0; s < one.steps.size() && s < two.steps.size(); ++s) {
    const SftStepMetrics &a = one.steps[s], &b = two.steps[s];
    Check(a.tokens == b.tokens && a.target_tokens == b.target_tokens, rank,
          "token counts of step " + std::to_string(a.step));
    worst_loss = std::max(worst_loss, std::fabs(a.loss - b.loss) / std::fabs(a.loss));
    worst_norm = std::max(worst_norm, std::fabs(a.grad_norm - b.grad_norm) / a.grad_norm);
  }
  const double worst_weight = MaxAbsDiff(one.weights, two.weights);
  if (rank == 0) {
    std::fprintf(stderr,
                 "2 ranks x 4 vs 1 rank x 8 after %zu steps: max rel diff of losses %.3g and of "
                 "grad norms %.3g (tol %.0e), max abs weight diff %.3g (tol %.0e), bitwise "
                 "equal weights: %s\n",
                 one.steps.size(), worst_loss, worst_norm, kRelTol, worst_weight, kWeightAbsTol,
                 worst_weight == 0 ? "yes" : "no");
  }
  Check(worst_loss <= kRelTol, rank, "losses within tolerance");
  Check(worst_norm <= kRelTol, rank, "gradient norms within tolerance");
  Check(worst_weight <= kWeightAbsTol, rank, "weights within tolerance");
}

void Run(Collective& mpi, Device device) {
  const int rank = mpi.Rank();
  const std::string dir = SharedTempDir(mpi);
  SftLoopOptions options;
  options.collective = &mpi;
  options.device = device;
  options.eval.every_steps = 0;  // once, at the end, split over the ranks
  options.eval.examples = 21;
  absl::StatusOr<SftResult> two = RunSft(Config(dir + "/two_ranks", device), options);
  Check(two.ok(), rank, "2-rank RunSft: " + two.status().ToString());
  // Both ranks learn whether both runs worked before the next collective (a failed run on one
  // rank must not leave the other waiting in a Broadcast the failed one never makes).
  if (!AllRanksOk(mpi, two.status()).ok()) {
    Check(mpi.Barrier().ok(), rank, "Barrier");
    return;
  }
  Check(two->final_exact_match.has_value(), rank, "evaluated at the end");
  uint64_t hash = Fnv1a(two->weights), root_hash = hash;
  Check(mpi.Broadcast(&root_hash, sizeof(root_hash), 0).ok() && root_hash == hash, rank,
        "identical weight bits on both ranks");

  // One process, the whole global batch. Every rank runs it (in its own directory) rather than
  // leave a core busy-waiting in MPI while rank 0 works.
  options.collective = nullptr;
  absl::StatusOr<SftResult> one =
      RunSft(Config(dir + "/one_rank_" + std::to_string(rank), device), options);
  Check(one.ok(), rank, "1-rank RunSft: " + one.status().ToString());
  // Every rank reaches the barrier below, also after a failure, so a failing rank cannot leave
  // the other waiting in a different collective.
  if (one.ok()) CompareRuns(*one, *two, rank);
  Check(mpi.Barrier().ok(), rank, "Barrier");
  std::error_code ec;
  if (rank == 0) std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace tandem::trainer

// The number of CUDA devices this process sees (0 without CUDA).
int GpuCount() {
  int count = 0;
#ifdef TANDEM_HAVE_CUDA
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
#endif
  return count;
}

int main(int argc, char** argv) {
  using namespace tandem::trainer;
  absl::StatusOr<std::unique_ptr<Collective>> mpi = MakeMpiCollective();
  if (!mpi.ok()) {
    std::fprintf(stderr, "MakeMpiCollective: %s\n", mpi.status().ToString().c_str());
    return 1;
  }
  if ((*mpi)->Size() != 2) {
    std::fprintf(stderr, "run with mpirun -np 2 (got %d ranks)\n", (*mpi)->Size());
    return 1;
  }
  const bool cuda = argc > 1 && std::string(argv[1]) == "cuda";
  if (cuda && GpuCount() < 2) {
    if ((*mpi)->Rank() == 0) std::fprintf(stderr, "skipped: fewer than 2 GPUs\n");
    return 77;
  }
  Run(**mpi, cuda ? tandem::Device::kCUDA : tandem::Device::kCPU);
  int64_t total = failures;
  if (!(*mpi)->AllReduceSum(&total, 1).ok()) return 1;
  if ((*mpi)->Rank() == 0) std::fprintf(stderr, total == 0 ? "PASSED\n" : "FAILED\n");
  return total == 0 ? 0 : 1;
}
