// Run under `mpirun -np P` (ctest: collectives_mpi_test, P = 2 and 3): the checks of
// collectives_checks.h on the MPI collective with host buffers. Exits non-zero on any mismatch.
#include <cstdio>

#include "tests/trainer/collectives_checks.h"
#include "trainer/collectives.h"

int main() {
  using namespace tandem::trainer;
  using namespace tandem::trainer::testing;
  auto c = MakeMpiCollective({.chunk_elements = 1000});  // small chunks: many rounds
  if (!c.ok()) {
    std::fprintf(stderr, "MakeMpiCollective: %s\n", c.status().ToString().c_str());
    return 1;
  }
  Collective& coll = **c;
  Check(coll.Size() >= 2, coll.Rank(), "expected at least 2 ranks");
  const HostPlace host;
  CheckFloatSums(coll, host);
  CheckIntsBroadcastBarrier(coll, host);
  CheckGradients(coll, host);
  std::printf("rank %d of %d: %s\n", coll.Rank(), coll.Size(), failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
