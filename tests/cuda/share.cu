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
    std::string cmd;
    while (std::getline(std::cin, cmd) && cmd != "exit") {
      if (cmd == "check") printf("word=0x%08x\n", word(d));
      if (cmd == "free") { CK(cudaFree(d)); printf("freed used_mb=%zu\n", used_bytes() / MB); }
    }
  } else if (mode == "ipc-import" && argc > 2) {
    cudaIpcMemHandle_t h;
    for (int i = 0; i < 64; i++) { unsigned b; sscanf(argv[2] + 2 * i, "%2x", &b); h.reserved[i] = (char)b; }
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
