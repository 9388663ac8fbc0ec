// kaiyuan_emu_runtime.h: the interface between the kaiyuan CUDA emulator's
// runtime (emu/runtime.cpp, one shared library per process, loaded with
// RTLD_GLOBAL) and the kernel libraries (one per kernel file, compiled with
// kaiyuan_emu.h force-included), and the C ABI the Rust side calls
// (src/device_emu.rs mirrors EmuReport and kaiyuan_emu_launch).
#pragma once

#include <cstdint>

// threadIdx / blockIdx are uint3 and blockDim / gridDim dim3, as in CUDA
// (plain aggregates here: no constructors, so they can live in TLS).
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

// Words of payload one lane hands to a warp-collective operation (an
// mma.sync m16n8k16 needs 10: four A registers, two B, four C).
#define KAIYUAN_EMU_WARP_WORDS 12
// Dynamic shared memory the runtime has room for, per block.
#define KAIYUAN_EMU_MAX_DYNAMIC_SHARED (228 * 1024)
// Kernel parameters one launch can pass: integers/pointers and floats.
#define KAIYUAN_EMU_MAX_INT_ARGS 24
#define KAIYUAN_EMU_MAX_FLOAT_ARGS 8

// Warp-collective operations (the kind must agree across the lanes that
// meet; the name is for messages).
enum {
    KAIYUAN_EMU_OP_SHFL = 1,
    KAIYUAN_EMU_OP_VOTE = 2,
    KAIYUAN_EMU_OP_SYNCWARP = 3,
    KAIYUAN_EMU_OP_LDMATRIX = 4,
    KAIYUAN_EMU_OP_MMA = 5,
    KAIYUAN_EMU_OP_REDUCE = 6,
};

// What the lanes of one warp-collective call handed in: `valid` has bit l
// set when lane l took part, and then data[l] holds its payload. `serial`
// is unique to the call (per OS thread); the first lane to read the result
// may leave work shared by the warp in `scratch`, marking it with the
// serial it was computed for (the mma emulation decodes its operands once).
struct EmuWarpResult {
    unsigned int valid;
    unsigned long long serial;
    unsigned long long data[32][KAIYUAN_EMU_WARP_WORDS];
    mutable unsigned long long scratch_serial;
    mutable float scratch[16 * 16 + 16 * 8];
};

// How a launch ended (kaiyuan_emu_launch's return value and report.kind).
enum {
    KAIYUAN_EMU_OK = 0,
    KAIYUAN_EMU_BAD_LAUNCH = 1,  // an invalid configuration (message says which)
    KAIYUAN_EMU_KERNEL_ERROR = 2,  // the kernel broke a CUDA rule the emulator checks
    KAIYUAN_EMU_FAULT = 3,  // a signal: a bad address, a failed bounds/alignment check
    KAIYUAN_EMU_DEADLOCK = 4,  // threads wait at barriers no other thread reaches
};

// The report of a launch that did not end well (filled by the runtime,
// read by the Rust side; keep in step with `EmuReport` in device_emu.rs).
struct EmuReport {
    int kind;
    int signal;  // the signal number for KAIYUAN_EMU_FAULT
    unsigned long long fault_address;  // si_addr for SIGSEGV/SIGBUS
    unsigned long long pc_offset;  // the faulting instruction, relative to `object`
    unsigned int block[3];  // blockIdx of the failing thread
    unsigned int thread[3];  // threadIdx of the failing thread
    int in_thread;  // whether block/thread name a thread (0: the launch itself)
    char object[512];  // the shared object holding the faulting instruction
    char message[1024];
};

// Block- and thread-local state of the thread running a launch.
extern "C" {
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;

// Barrier of the whole block; returns how many of the threads that reached
// it passed a non-zero `predicate` (and, through *arrived, how many arrived).
int kaiyuan_emu_syncthreads(int predicate, int* arrived) noexcept;
// A warp-collective call: hands `words` words of payload in, returns every
// taking-part lane's payload once all of them (the non-exited lanes of
// `mask`) have made the same call.
const EmuWarpResult* kaiyuan_emu_warp(int op, const char* name, unsigned int mask, const unsigned long long* payload,
                                      int words) noexcept;
// The calling thread's lane (0–31) within its warp.
unsigned int kaiyuan_emu_lane(void) noexcept;
// The lanes of the calling thread's warp that have not exited.
unsigned int kaiyuan_emu_active_mask(void) noexcept;
// Ends the launch with KAIYUAN_EMU_KERNEL_ERROR and this message.
[[noreturn]] void kaiyuan_emu_fail(const char* message) noexcept;
// cp.async: copies `src_bytes` of `cp_bytes` bytes from src to dst (the rest
// zero-filled) when the group it is committed with is waited for.
void kaiyuan_emu_cp_async(void* dst, const void* src, int cp_bytes, int src_bytes) noexcept;
void kaiyuan_emu_cp_async_commit(void) noexcept;
void kaiyuan_emu_cp_async_wait(int pending) noexcept;

// Runs a kernel: every block of `grid`, one after the other, each with
// `block` threads run as fibers. Integer and pointer arguments in
// declaration order in `ints`, float arguments in declaration order in
// `floats` (see the trampoline in runtime.cpp). `flags` bit 0: run threads
// in reverse order in every block, bit 1: in forward order in every block
// (default: forward in even blocks, reverse in odd ones).
int kaiyuan_emu_launch(void* kernel, const unsigned int* grid, const unsigned int* block, unsigned int shared_bytes,
                       const unsigned long long* ints, int n_ints, const float* floats, int n_floats,
                       unsigned int flags, EmuReport* report) noexcept;
// sizeof(EmuReport), for the Rust side to check its copy of the layout.
unsigned int kaiyuan_emu_report_size(void) noexcept;
}
