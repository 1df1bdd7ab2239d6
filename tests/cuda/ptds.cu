// Built with --default-stream per-thread: the runtime calls only the _ptsz
// entry points for stream-ordered work on the default stream. The cap must
// hold there too, and kernels must run. argv[1]: cap in MiB.
#include "common.cuh"
#include "tslice.cuh"

int main(int argc, char **argv) {
  size_t cap = strtoull(argc > 1 ? argv[1] : "64", 0, 10) << 20;
  void *a = 0, *b = 0;
  CK(cudaMallocAsync(&a, cap - (2 << 20), 0));
  EXPECT_ERR(cudaMallocAsync(&b, 4 << 20, 0), cudaErrorMemoryAllocation);
  for (int i = 0; i < 10; i++) sim_spin<<<1, 1>>>(20000);
  CK(cudaGetLastError());
  CK(cudaFreeAsync(a, 0));
  CK(cudaStreamSynchronize(0));
  CK(cudaMallocAsync(&b, 4 << 20, 0));
  CK(cudaFreeAsync(b, 0));
  CK(cudaDeviceSynchronize());
  tslice_device_stats st;
  if (tslice_stats(0, &st)) {
    printf("hbm_peak=%llu hbm_denials=%llu launches=%llu\n", (unsigned long long)st.hbm_peak,
           (unsigned long long)st.hbm_denials, (unsigned long long)st.launches);
    EXPECT(st.hbm_denials == 1 && st.hbm_peak == cap - (2 << 20));
  }
  DONE();
}
