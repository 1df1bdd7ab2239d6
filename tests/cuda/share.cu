// Memory shared between processes: legacy IPC handles and VMM POSIX file
// descriptors. One program, run as exporter (interactive: commands on
// stdin) and importer.
//   share ipc-export             share ipc-import <hex handle>
//   share vmm-export             share vmm-import <pid> <fd>
#include "common.cuh"
#include <cuda.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <iostream>
#include <string>

#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, (int)r_); g_fails++; } } while (0)
static const size_t MB = 1 << 20;

static unsigned word(const void* d) {
  unsigned w = 0; CK(cudaMemcpy(&w, d, 4, cudaMemcpyDeviceToHost)); return w;
}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  CK(cudaFree(0));
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (mode == "ipc-export") {
    void* d = nullptr; CK(cudaMalloc(&d, 8 * MB));
    CK(cudaMemset(d, 0x5a, 4096)); CK(cudaDeviceSynchronize());
    cudaIpcMemHandle_t h; CK(cudaIpcGetMemHandle(&h, d));
    printf("handle=");
    for (int i = 0; i < 64; i++) printf("%02x", (unsigned char)h.reserved[i]);
    printf("\nword=0x%08x\n", word(d));
    // An interprocess event recorded after 1.5 s of work on a stream.
    cudaEvent_t ev; CK(cudaEventCreateWithFlags(&ev, cudaEventInterprocess | cudaEventDisableTiming));
    cudaEvent_t timed; EXPECT_ERR(cudaEventCreateWithFlags(&timed, cudaEventInterprocess), cudaErrorInvalidValue);
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    sim_spin<<<1, 1, 0, s>>>(1500000000ull);
    CK(cudaEventRecord(ev, s));
    cudaIpcEventHandle_t eh; CK(cudaIpcGetEventHandle(&eh, ev));
    printf("event=");
    for (int i = 0; i < 64; i++) printf("%02x", (unsigned char)eh.reserved[i]);
    printf("\n");
    std::string cmd;
    while (std::getline(std::cin, cmd) && cmd != "exit") {
      if (cmd == "check") printf("word=0x%08x\n", word(d));
      if (cmd == "free") { CK(cudaFree(d)); printf("freed used_mb=%zu\n", used_bytes() / MB); }
    }
  } else if (mode == "ipc-import" && argc > 2) {
    cudaIpcMemHandle_t h;
    for (int i = 0; i < 64; i++) { unsigned b; sscanf(argv[2] + 2 * i, "%2x", &b); h.reserved[i] = (char)b; }
    if (argc > 3) {
      // The exporter's event: still running, then waited for from here.
      cudaIpcEventHandle_t eh;
      for (int i = 0; i < 64; i++) { unsigned b; sscanf(argv[3] + 2 * i, "%2x", &b); eh.reserved[i] = (char)b; }
      cudaEvent_t ev; CK(cudaIpcOpenEventHandle(&ev, eh));
      printf("event_query=%s\n", cudaGetErrorName(cudaEventQuery(ev)));
      (void)cudaGetLastError();
      cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      CK(cudaStreamWaitEvent(s, ev, 0));
      CK(cudaEventSynchronize(ev));
      printf("event_after_sync=%s\n", cudaGetErrorName(cudaEventQuery(ev)));
      CK(cudaEventDestroy(ev));
    }
    void* d = nullptr; CK(cudaIpcOpenMemHandle(&d, h, cudaIpcMemLazyEnablePeerAccess));
    printf("word=0x%08x\n", word(d));
    printf("used_mb=%zu\n", used_bytes() / MB);
    CK(cudaMemset(d, 0x77, 4096)); CK(cudaDeviceSynchronize());
    void* again = nullptr; CK(cudaIpcOpenMemHandle(&again, h, 0));
    EXPECT(again == d);
    CK(cudaIpcCloseMemHandle(again));
    CK(cudaIpcCloseMemHandle(d));
    EXPECT_ERR(cudaIpcCloseMemHandle(d), cudaErrorInvalidValue);
  } else if (mode == "vmm-export") {
    CUmemAllocationProp prop = {};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE; prop.location.id = 0;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    CUmemGenericAllocationHandle mh; CU(cuMemCreate(&mh, 4 * MB, &prop, 0));
    CUdeviceptr va; CU(cuMemAddressReserve(&va, 4 * MB, 0, 0, 0));
    CU(cuMemMap(va, 4 * MB, 0, mh, 0));
    CUmemAccessDesc ad = {}; ad.location = prop.location; ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    CU(cuMemSetAccess(va, 4 * MB, &ad, 1));
    CU(cuMemsetD8(va, 0x3c, 4096));
    int fd = -1; CU(cuMemExportToShareableHandle(&fd, mh, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    printf("fd=%d\n", fd);
    // Not asked for at creation: refused.
    CUmemAllocationProp plain = prop; plain.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    CUmemGenericAllocationHandle ph; CU(cuMemCreate(&ph, 2 * MB, &plain, 0));
    int nofd = -1;
    EXPECT(cuMemExportToShareableHandle(&nofd, ph, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) == CUDA_ERROR_INVALID_VALUE);
    CU(cuMemRelease(ph));
    printf("used_mb=%zu\n", used_bytes() / MB);
    std::string cmd;
    while (std::getline(std::cin, cmd) && cmd != "exit") {
      if (cmd == "check") printf("word=0x%08x\n", word((void*)va));
      if (cmd == "release") {
        CU(cuMemUnmap(va, 4 * MB)); CU(cuMemRelease(mh)); CU(cuMemAddressFree(va, 4 * MB));
        printf("released used_mb=%zu\n", used_bytes() / MB);
      }
    }
  } else if (mode == "pool-export") {
    // A pool shareable as POSIX descriptors, one allocation exported from it.
    cudaMemPoolProps pp = {};
    pp.allocType = cudaMemAllocationTypePinned;
    pp.handleTypes = cudaMemHandleTypePosixFileDescriptor;
    pp.location.type = cudaMemLocationTypeDevice; pp.location.id = 0;
    cudaMemPool_t pool; CK(cudaMemPoolCreate(&pool, &pp));
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void* d = nullptr; CK(cudaMallocFromPoolAsync(&d, 6 * MB, pool, s));
    CK(cudaMemsetAsync(d, 0x2b, 4096, s)); CK(cudaStreamSynchronize(s));
    int fd = -1; CK(cudaMemPoolExportToShareableHandle(&fd, pool, cudaMemHandleTypePosixFileDescriptor, 0));
    cudaMemPoolPtrExportData ed; CK(cudaMemPoolExportPointer(&ed, d));
    printf("fd=%d\ndata=", fd);
    for (int i = 0; i < 64; i++) printf("%02x", (unsigned char)ed.reserved[i]);
    printf("\nused_mb=%zu\n", used_bytes() / MB);
    std::string cmd;
    while (std::getline(std::cin, cmd) && cmd != "exit") {
      if (cmd == "check") printf("word=0x%08x\n", word(d));
      if (cmd == "free") { CK(cudaFreeAsync(d, s)); CK(cudaStreamSynchronize(s)); printf("freed used_mb=%zu\n", used_bytes() / MB); }
    }
  } else if (mode == "pool-import" && argc > 4) {
    char path[64]; snprintf(path, sizeof path, "/proc/%s/fd/%s", argv[2], argv[3]);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    EXPECT(fd >= 0);
    cudaMemPool_t pool; CK(cudaMemPoolImportFromShareableHandle(&pool, (void*)(uintptr_t)fd, cudaMemHandleTypePosixFileDescriptor, 0));
    close(fd);
    cudaMemPoolPtrExportData ed;
    for (int i = 0; i < 64; i++) { unsigned b; sscanf(argv[4] + 2 * i, "%2x", &b); ed.reserved[i] = (char)b; }
    void* d = nullptr; CK(cudaMemPoolImportPointer(&d, pool, &ed));
    printf("word=0x%08x\n", word(d));
    printf("used_mb=%zu\n", used_bytes() / MB);
    // Nothing can be allocated from an imported pool.
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void* x = nullptr; EXPECT(cudaMallocFromPoolAsync(&x, MB, pool, s) != cudaSuccess); (void)cudaGetLastError();
    CK(cudaMemset(d, 0x66, 4096)); CK(cudaDeviceSynchronize());
    CK(cudaFree(d));
  } else if (mode == "memops") {
    // Stream memory operations through the driver API: a batched write
    // whose driver-internal alias field holds garbage, a wait that holds,
    // and a wait that does not yet, satisfied from another stream.
    CUdeviceptr d; CU(cuMemAlloc(&d, 4096)); CU(cuMemsetD32(d, 5, 16));
    CUstream a, b; CU(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING)); CU(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    CUstreamBatchMemOpParams ops[2]; memset(ops, 0, sizeof ops);
    ops[0].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
    ops[0].writeValue.address = d; ops[0].writeValue.value = 7; ops[0].writeValue.alias = 0xdeadbeef;
    ops[1].waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_32;
    ops[1].waitValue.address = d; ops[1].waitValue.value = 7; ops[1].waitValue.flags = CU_STREAM_WAIT_VALUE_EQ;
    ops[1].waitValue.alias = 0x1234;
    CU(cuStreamBatchMemOp(a, 2, ops, 0)); CU(cuStreamSynchronize(a));
    unsigned w = 0; CU(cuMemcpyDtoH(&w, d, 4)); printf("batch_word=%u\n", w);
    // Wait for 9 at d on stream a: stream a is not done until stream b writes it.
    CU(cuStreamWaitValue32(a, d, 9, CU_STREAM_WAIT_VALUE_EQ));
    printf("query_waiting=%d\n", (int)cuStreamQuery(a));
    CU(cuStreamWriteValue64(b, d + 8, 0x1122334455667788ull, 0));
    CU(cuStreamWriteValue32(b, d, 9, 0)); CU(cuStreamSynchronize(b));
    CU(cuStreamSynchronize(a));
    printf("query_after=%d\n", (int)cuStreamQuery(a));
    unsigned long long w64 = 0; CU(cuMemcpyDtoH(&w64, d + 8, 8)); printf("word64=0x%llx\n", w64);
    CU(cuMemFree(d));
  } else if (mode == "vmm-import" && argc > 3) {
    char path[64]; snprintf(path, sizeof path, "/proc/%s/fd/%s", argv[2], argv[3]);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    EXPECT(fd >= 0);
    CUmemGenericAllocationHandle mh;
    CU(cuMemImportFromShareableHandle(&mh, (void*)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    close(fd);
    CUmemAllocationProp prop = {}; CU(cuMemGetAllocationPropertiesFromHandle(&prop, mh));
    EXPECT(prop.location.id == 0);
    CUdeviceptr va; CU(cuMemAddressReserve(&va, 4 * MB, 0, 0, 0));
    CU(cuMemMap(va, 4 * MB, 0, mh, 0));
    CUmemAccessDesc ad = {}; ad.location = prop.location; ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    CU(cuMemSetAccess(va, 4 * MB, &ad, 1));
    printf("word=0x%08x\n", word((void*)va));
    printf("used_mb=%zu\n", used_bytes() / MB);
    CU(cuMemsetD8(va, 0x44, 4096));
    CU(cuMemUnmap(va, 4 * MB)); CU(cuMemRelease(mh)); CU(cuMemAddressFree(va, 4 * MB));
    printf("released used_mb=%zu\n", used_bytes() / MB);
  } else {
    printf("unknown mode\n");
    return 2;
  }
  DONE();
}
