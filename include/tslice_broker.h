/*
 * tslice: the node broker's wire protocol and shared pages (version 1).
 *
 * The broker (tslice-broker) listens on a Unix stream socket (default
 * /run/tslice/broker.sock). The shim in each tenant process connects at its
 * first successful cuInit; the `tslice` CLI connects to ask for the status;
 * NVML in a process that is not connected asks for its tenant's view of a
 * device on a short connection of its own (VIEW_REQUEST).
 * The Rust definition is the crate tslice-proto (proto/src), which this
 * header mirrors; a test keeps the page layouts equal.
 *
 * Identity: the broker identifies a peer from the kernel (SO_PEERCRED, a
 * pidfd, /proc/PID/cgroup), never from what it says. One connection is one
 * process, and a process has one connection (a second is refused while the
 * first is open; a view or status request is not a process's connection); a
 * process can change nothing but its own reservations, and read nothing but
 * its own tenant's (a view: its limit, reservations and process pids).
 *
 * FRAMES
 *   uint32_t length;          little-endian, bytes of the body that follows,
 *                             at most TSLICE_WIRE_MAX_FRAME
 *   body:
 *     uint16_t version;       TSLICE_WIRE_VERSION
 *     uint16_t kind;          one of TSLICE_MSG_*
 *     fields of that kind, little-endian, in the order listed below;
 *     a string is uint16_t length + UTF-8 bytes.
 * A frame that is too long, of another version, of an unknown kind, short,
 * or with bytes left over closes that one connection (the broker logs why);
 * nobody else notices.
 *
 * MESSAGES (client -> broker)
 *   HELLO (1)      uint32 pid (informational), uint32 flags (bit 0: reconnect),
 *                  uint16 n, n x { uint8 uuid[16]; uint64 total;
 *                  uint64 granted; uint64 used }  -- the process's devices by
 *                  CUDA ordinal, with what it already holds (a reconnect after
 *                  a broker restart rebuilds the ledger from these).
 *                  The process page's memfd travels with it (SCM_RIGHTS),
 *                  a memfd of sizeof(struct tslice_process_page) rounded up to
 *                  whole 4096-byte pages, in ordinary shared memory (not
 *                  MFD_HUGETLB), sealed F_SEAL_SHRINK | F_SEAL_GROW (else the
 *                  broker ignores it).
 *   RESERVE (2)    uint32 req, uint32 dev (ordinal), uint64 bytes
 *   RELEASE (3)    uint32 dev, uint64 bytes   (unused reservation returned)
 *   STATUS_REQUEST (4)  (root or the broker's user only)
 *   VIEW_REQUEST (5)    uint8 uuid[16], uint64 total, uint32 ordinal -- alone
 *                  on its connection: the asking process's tenant's view of
 *                  that device (what NVML shows a process that never
 *                  initialised CUDA); total and CUDA ordinal (UINT32_MAX:
 *                  unknown) as the client sees the device (a tenant with no
 *                  process there has its limit resolved against them). Any
 *                  process may ask; nothing is admitted or reserved.
 * MESSAGES (broker -> client)
 *   WELCOME (101)  string tenant, uint32 flags; a read-only descriptor of the
 *                  budget page travels with it (SCM_RIGHTS).
 *   GRANT (102)    uint32 req, uint64 bytes   (0: refused at the tenant's limit)
 *   RECLAIM (103)  uint32 dev                 (return what you hold unused)
 *   STATUS (104)   string json                (parts; an empty part ends it)
 *   REFUSED (105)  string reason              (then the broker closes)
 *   VIEW (106)     string tenant (at most 4096 bytes), uint64 limit (UINT64_MAX: none),
 *                  uint64 reserved (by the tenant's processes on the device),
 *                  uint16 n, n x uint32 pid (host pids of the tenant's
 *                  processes on the device, at most TSLICE_WIRE_MAX_VIEW_PIDS)
 *
 * PAGES (atomics only; 64 devices)
 */
#ifndef TSLICE_BROKER_H
#define TSLICE_BROKER_H

#include <stdint.h>

#define TSLICE_WIRE_VERSION 1
#define TSLICE_WIRE_MAX_FRAME 65536
#define TSLICE_WIRE_MAX_DEVICES 64
#define TSLICE_WIRE_MAX_VIEW_PIDS 4096

#define TSLICE_MSG_HELLO 1
#define TSLICE_MSG_RESERVE 2
#define TSLICE_MSG_RELEASE 3
#define TSLICE_MSG_STATUS_REQUEST 4
#define TSLICE_MSG_VIEW_REQUEST 5
#define TSLICE_MSG_WELCOME 101
#define TSLICE_MSG_GRANT 102
#define TSLICE_MSG_RECLAIM 103
#define TSLICE_MSG_STATUS 104
#define TSLICE_MSG_REFUSED 105
#define TSLICE_MSG_VIEW 106

#define TSLICE_BUDGET_MAGIC 0x74514247u  /* "tQBG" */
#define TSLICE_PROCESS_MAGIC 0x74515052u /* "tQPR" */
#define TSLICE_PAGE_VERSION 1

#define TSLICE_CLASS_STANDARD 0
#define TSLICE_CLASS_LATENCY_CRITICAL 1
#define TSLICE_CLASS_BEST_EFFORT 2

/* Written by the broker; mapped read-only by the process (8 KiB). */
struct tslice_budget_dev {
    uint32_t share_ppm;       /* share of the device's time, ppm (1000000: all) */
    uint32_t class_;          /* TSLICE_CLASS_* */
    uint64_t hold_until_ns;   /* no launches before this CLOCK_MONOTONIC time (0: none) */
    uint64_t mem_limit;       /* the tenant's limit on the device (UINT64_MAX: none) */
    uint64_t mem_reserved;    /* what all the tenant's processes reserved */
    uint64_t mem_mine;        /* what this process reserved, as the broker counts it */
    uint64_t slot_anchor_ns;  /* coordinated turns: every slot_cycle_ns from slot_anchor_ns, */
    uint64_t slot_cycle_ns;   /* launch only in [slot_offset_ns, slot_offset_ns + slot_len_ns) */
    uint64_t slot_offset_ns;
    uint64_t slot_len_ns;     /* 0: no slot (paced by share_ppm) */
};

struct tslice_budget_page {
    uint32_t magic;           /* TSLICE_BUDGET_MAGIC */
    uint32_t version;         /* TSLICE_PAGE_VERSION */
    uint64_t generation;      /* sequence lock: odd while the broker writes; re-read if it changed */
    uint32_t devices;
    uint32_t host_pid;        /* the process's pid as the broker sees it (the host's) */
    uint64_t written_ns;      /* the broker's clock at its last write */
    struct tslice_budget_dev dev[TSLICE_WIRE_MAX_DEVICES];
};

/* Written by the process; mapped read-only by the broker (8 KiB). The
 * broker treats it as the process's claim about itself. */
struct tslice_process_dev {
    uint64_t launches;         /* launch attempts: the broker's demand signal */
    uint64_t charged_ns;       /* GPU time charged by the gate */
    uint64_t throttle_wait_ns; /* time launches waited at the gate */
    uint64_t throttled;        /* launches that waited */
    uint64_t mem_used;
    uint64_t mem_credit;       /* reserved and not used */
    uint64_t mem_denials;
    uint64_t mem_peak;
};

struct tslice_process_page {
    uint32_t magic;            /* TSLICE_PROCESS_MAGIC */
    uint32_t version;          /* TSLICE_PAGE_VERSION */
    uint32_t devices;
    uint32_t pad;
    struct tslice_process_dev dev[TSLICE_WIRE_MAX_DEVICES];
};

#endif /* TSLICE_BROKER_H */
