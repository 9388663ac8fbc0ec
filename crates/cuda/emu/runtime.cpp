// runtime.cpp: the kaiyuan CUDA emulator's runtime. One copy per process
// (loaded RTLD_GLOBAL by src/device_emu.rs before any kernel library), so
// the thread/block indices, barriers, warp collectives and the fault
// handler are shared by every kernel file.
//
// A launch runs its blocks one after the other on the calling OS thread;
// the threads of a block are fibers (own stacks, switched cooperatively).
// A fiber runs until it reaches __syncthreads, a warp-collective call or its
// end; the scheduler then completes whatever is complete (a warp call once
// every non-exited lane of its mask has made it, the block barrier once
// every non-exited thread waits at it) and runs the fibers that may go on.
// Exited threads drop out of barriers and warp calls, as on the hardware.
// Nothing is complete and threads still wait: a deadlock, reported.
//
// Faults (SIGSEGV/SIGBUS: guard pages around every buffer; SIGILL: the
// bounds and alignment checks the kernels are compiled with trap; SIGFPE)
// inside a kernel end the launch with a report instead of the process.
#include "kaiyuan_emu_runtime.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

extern "C" {
__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;
// `extern __shared__` arrays are declared with this symbol as their
// assembler name (src/device_emu.rs rewrites the declarations).
__thread unsigned char kaiyuan_emu_dynamic_shared[KAIYUAN_EMU_MAX_DYNAMIC_SHARED] __attribute__((aligned(128)));
}

namespace {

// ---- fiber contexts ---------------------------------------------------------
#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores the stack pointer in *save and resumes the context
// whose stack pointer is `load`.
extern "C" void kaiyuan_emu_ctx_switch(void** save, void* load);
asm(R"(
    .text
    .globl kaiyuan_emu_ctx_switch
    .hidden kaiyuan_emu_ctx_switch
    .type kaiyuan_emu_ctx_switch,@function
kaiyuan_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kaiyuan_emu_ctx_switch, .-kaiyuan_emu_ctx_switch
)");

struct Ctx {
    void* sp = nullptr;
};
inline void ctx_switch(Ctx* from, Ctx* to) { kaiyuan_emu_ctx_switch(&from->sp, to->sp); }
[[noreturn]] inline void ctx_jump(Ctx* to) {
    void* discarded;
    kaiyuan_emu_ctx_switch(&discarded, to->sp);
    __builtin_unreachable();
}
void ctx_make(Ctx* ctx, char* stack, size_t size, void (*entry)()) {
    auto* sp = reinterpret_cast<unsigned long long*>((reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15));
    *--sp = 0;  // the return address of `entry` (never used): entry sees rsp ≡ 8 (mod 16)
    *--sp = reinterpret_cast<unsigned long long>(entry);  // popped by `ret`
    for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp, rbx, r12–r15
    *--sp = 0x0000037f00001f80ull;  // MXCSR 0x1f80 (low word), x87 control word 0x037f
    ctx->sp = sp;
}
#else
struct Ctx {
    ucontext_t uc;
};
inline void ctx_switch(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
[[noreturn]] inline void ctx_jump(Ctx* to) {
    setcontext(&to->uc);
    abort();
}
void ctx_make(Ctx* ctx, char* stack, size_t size, void (*entry)()) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = stack;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = nullptr;
    makecontext(&ctx->uc, entry, 0);
}
#endif

// ---- state --------------------------------------------------------------------
constexpr size_t kStackSize = 256 * 1024;  // per emulated thread, plus a guard page below

size_t page_size() {
    static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return size;
}

struct Stack {
    char* map = nullptr;  // guard page, then the stack
    size_t map_len = 0;
    char* lo() const { return map + page_size(); }
};

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Copy {
    void* dst;
    const void* src;
    int cp_bytes;
    int src_bytes;
};

struct Fiber {
    Ctx ctx;
    State state = DONE;
    uint3 tid{};
    unsigned lane = 0, warp = 0;
    // At a warp call:
    int op = 0;
    const char* op_name = "";
    unsigned mask = 0;
    int words = 0;
    unsigned long long payload[KAIYUAN_EMU_WARP_WORDS]{};
    // At __syncthreads:
    int predicate = 0;
    // cp.async: copies not yet committed, and committed groups not yet waited for.
    std::vector<Copy> open;
    std::vector<std::vector<Copy>> groups;
};

struct Warp {
    EmuWarpResult result;
};

struct Launch {
    Ctx scheduler;
    std::vector<Stack> stacks;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    int threads = 0;
    int current = -1;
    bool in_fiber = false;
    void* kernel = nullptr;
    unsigned long long ints[KAIYUAN_EMU_MAX_INT_ARGS]{};
    float floats[KAIYUAN_EMU_MAX_FLOAT_ARGS]{};
    // Warp calls completed on this OS thread (the results' serials).
    unsigned long long warp_calls = 0;
    // The last released barrier: predicates passed, threads arrived.
    int barrier_count = 0, barrier_arrived = 0;
    // Failure (set by kaiyuan_emu_fail, the signal handler or the scheduler).
    bool failed = false;
    int fail_kind = KAIYUAN_EMU_OK;
    bool fail_in_thread = false;
    uint3 fail_block{}, fail_thread{};
    int fault_signal = 0;
    void* fault_address = nullptr;
    uintptr_t fault_pc = 0;
    char message[1024]{};

    ~Launch() {
        for (Stack& s : stacks)
            if (s.map) munmap(s.map, s.map_len);
    }
};

thread_local Launch t_launch;
// The launch running on this OS thread (the signal handler reads it).
__thread Launch* t_active = nullptr;

Fiber& current_fiber() { return t_active->fibers[static_cast<size_t>(t_active->current)]; }

void set_message(Launch* launch, const char* format, ...) __attribute__((format(printf, 2, 3)));
void set_message(Launch* launch, const char* format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(launch->message, sizeof launch->message, format, args);
    va_end(args);
}

// Ends the launch from inside a fiber: records who failed and goes back to
// the scheduler for good.
[[noreturn]] void fail_here(int kind) {
    Launch* launch = t_active;
    Fiber& fiber = current_fiber();
    launch->failed = true;
    launch->fail_kind = kind;
    launch->fail_in_thread = true;
    launch->fail_block = blockIdx;
    launch->fail_thread = fiber.tid;
    ctx_jump(&launch->scheduler);
}

void yield_to_scheduler() {
    Launch* launch = t_active;
    ctx_switch(&current_fiber().ctx, &launch->scheduler);
}

void complete(const Copy& copy) {
    std::memset(copy.dst, 0, static_cast<size_t>(copy.cp_bytes));
    std::memcpy(copy.dst, copy.src, static_cast<size_t>(copy.src_bytes));
}

void flush_copies(Fiber& fiber) {
    for (auto& group : fiber.groups)
        for (const Copy& copy : group) complete(copy);
    for (const Copy& copy : fiber.open) complete(copy);
    fiber.groups.clear();
    fiber.open.clear();
}

// Every kernel is called through this type: integer-class arguments
// (pointers, u64, int) travel in integer registers and then on the stack
// in 8-byte slots, float arguments in SSE registers, each class in
// declaration order independently of the other (x86-64 System V and
// AArch64 alike, with at most 8 floats). An int parameter reads the low
// half of its slot; the callee ignores the surplus zeros.
using Trampoline = void (*)(unsigned long long, unsigned long long, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, unsigned long long, unsigned long long, float,
                            float, float, float, float, float, float, float);
static_assert(KAIYUAN_EMU_MAX_INT_ARGS == 24 && KAIYUAN_EMU_MAX_FLOAT_ARGS == 8, "the trampoline's arity");

void fiber_entry() {
    Launch* launch = t_active;
    const unsigned long long* i = launch->ints;
    const float* f = launch->floats;
    reinterpret_cast<Trampoline>(launch->kernel)(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10],
                                                 i[11], i[12], i[13], i[14], i[15], i[16], i[17], i[18], i[19],
                                                 i[20], i[21], i[22], i[23], f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                                                 f[7]);
    launch = t_active;
    Fiber& fiber = current_fiber();
    // Outstanding cp.async copies complete even when their thread exits.
    flush_copies(fiber);
    fiber.state = DONE;
    ctx_jump(&launch->scheduler);
}

// ---- signals ------------------------------------------------------------------
const int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
struct sigaction g_previous[NSIG];

uintptr_t pc_of(void* context) {
    auto* uc = static_cast<ucontext_t*>(context);
#if defined(__x86_64__)
    return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
    return static_cast<uintptr_t>(uc->uc_mcontext.pc);
#else
    (void)uc;
    return 0;
#endif
}

void on_signal(int signal, siginfo_t* info, void* context) {
    Launch* launch = t_active;
    if (launch != nullptr && launch->in_fiber && launch->current >= 0) {
        Fiber& fiber = launch->fibers[static_cast<size_t>(launch->current)];
        launch->failed = true;
        launch->fail_kind = KAIYUAN_EMU_FAULT;
        launch->fail_in_thread = true;
        launch->fail_block = blockIdx;
        launch->fail_thread = fiber.tid;
        launch->fault_signal = signal;
        launch->fault_address = info->si_addr;
        launch->fault_pc = pc_of(context);
        // SA_NODEFER: the signal is not blocked here, so leaving the
        // handler this way leaves the signal mask as it was.
        ctx_jump(&launch->scheduler);
    }
    // Not a kernel's: whoever handled it before us (Rust's stack-overflow
    // report, say), else the default action.
    const struct sigaction& previous = g_previous[signal];
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction != nullptr) {
            previous.sa_sigaction(signal, info, context);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(signal);
        return;
    }
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal, &fallback, nullptr);  // the faulting instruction runs again and takes the default action
}

void install_signal_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        for (int signal : kSignals) {
            struct sigaction action {};
            action.sa_sigaction = on_signal;
            action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
            sigemptyset(&action.sa_mask);
            sigaction(signal, &action, &g_previous[signal]);
        }
    });
}

// A stack for the handler (a fiber's stack may be the one that overflowed),
// unless the thread already has one (Rust's threads do).
struct AltStack {
    void* memory = nullptr;
    size_t size = 0;
    void ensure() {
        stack_t current{};
        if (sigaltstack(nullptr, &current) != 0 || !(current.ss_flags & SS_DISABLE)) return;
        size = 64 * 1024;
        memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) {
            memory = nullptr;
            return;
        }
        stack_t mine{};
        mine.ss_sp = memory;
        mine.ss_size = size;
        sigaltstack(&mine, nullptr);
    }
    ~AltStack() {
        if (memory == nullptr) return;
        stack_t off{};
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, nullptr);
        munmap(memory, size);
    }
};
thread_local AltStack t_alt_stack;

// ---- the scheduler --------------------------------------------------------------
void run_fiber(Launch* launch, int index) {
    Fiber& fiber = launch->fibers[static_cast<size_t>(index)];
    launch->current = index;
    threadIdx = fiber.tid;
    launch->in_fiber = true;
    ctx_switch(&launch->scheduler, &fiber.ctx);
    launch->in_fiber = false;
}

void fail_from_scheduler(Launch* launch, int kind, const Fiber* culprit) {
    launch->failed = true;
    launch->fail_kind = kind;
    launch->fail_in_thread = culprit != nullptr;
    launch->fail_block = blockIdx;
    if (culprit) launch->fail_thread = culprit->tid;
}

// Completes at most one warp call of warp `w` (one result buffer per warp:
// its lanes read it before the scheduler runs again). Returns whether it did.
bool resolve_warp(Launch* launch, int w) {
    const int first = w * 32;
    const int last = first + 32 < launch->threads ? first + 32 : launch->threads;
    unsigned alive = 0, waiting = 0;
    for (int t = first; t < last; ++t) {
        const Fiber& f = launch->fibers[static_cast<size_t>(t)];
        if (f.state != DONE) alive |= 1u << (t - first);
        if (f.state == AT_WARP) waiting |= 1u << (t - first);
    }
    for (int l = 0; l < 32 && waiting; ++l) {
        if (!(waiting >> l & 1)) continue;
        const Fiber& lead = launch->fibers[static_cast<size_t>(first + l)];
        const unsigned mask = lead.mask;
        unsigned group = 0;
        for (int m = 0; m < 32; ++m)
            if (waiting >> m & 1 && launch->fibers[static_cast<size_t>(first + m)].mask == mask) group |= 1u << m;
        waiting &= ~group;
        if ((mask & alive) != group) continue;  // a lane of the mask is elsewhere (or waits with another mask)
        for (int m = 0; m < 32; ++m) {
            if (!(group >> m & 1)) continue;
            const Fiber& f = launch->fibers[static_cast<size_t>(first + m)];
            if (f.op != lead.op || std::strcmp(f.op_name, lead.op_name) != 0) {
                set_message(launch,
                            "lanes %d and %d of warp %d meet at different warp-synchronous calls (%s and %s, mask "
                            "0x%08x)",
                            l, m, w, lead.op_name, f.op_name, mask);
                fail_from_scheduler(launch, KAIYUAN_EMU_KERNEL_ERROR, &f);
                return false;
            }
        }
        EmuWarpResult& result = launch->warps[static_cast<size_t>(w)].result;
        result.valid = group;
        result.serial = ++launch->warp_calls;
        for (int m = 0; m < 32; ++m) {
            if (!(group >> m & 1)) continue;
            Fiber& f = launch->fibers[static_cast<size_t>(first + m)];
            std::memcpy(result.data[m], f.payload, sizeof(unsigned long long) * static_cast<size_t>(f.words));
            f.state = READY;
        }
        return true;
    }
    return false;
}

void describe_deadlock(Launch* launch) {
    int at_barrier = 0, done = 0;
    char detail[640] = "";
    size_t used = 0;
    const Fiber* culprit = nullptr;
    for (const Fiber& f : launch->fibers) {
        if (&f - launch->fibers.data() >= launch->threads) break;
        if (f.state == AT_BARRIER) ++at_barrier;
        if (f.state == DONE) ++done;
        if (f.state == AT_WARP && used < sizeof detail - 96) {
            if (!culprit) culprit = &f;
            used += static_cast<size_t>(snprintf(detail + used, sizeof detail - used, "%s thread %u (warp %u lane %u) at %s mask 0x%08x",
                                                 used ? ";" : "", f.tid.x + blockDim.x * (f.tid.y + blockDim.y * f.tid.z),
                                                 f.warp, f.lane, f.op_name, f.mask));
        }
    }
    set_message(launch,
                "deadlock: no barrier or warp call can complete (%d threads wait at __syncthreads, %d have exited%s%s); "
                "a thread named in a warp call's mask is elsewhere, or __syncthreads is not reached by all threads",
                at_barrier, done, used ? ", and: " : "", detail);
    fail_from_scheduler(launch, KAIYUAN_EMU_DEADLOCK, culprit);
}

void run_block(Launch* launch, unsigned shared_bytes, bool reverse) {
    const int n = launch->threads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = launch->fibers[static_cast<size_t>(t)];
        f.state = READY;
        f.open.clear();
        f.groups.clear();
        f.tid.x = static_cast<unsigned>(t) % blockDim.x;
        f.tid.y = (static_cast<unsigned>(t) / blockDim.x) % blockDim.y;
        f.tid.z = static_cast<unsigned>(t) / (blockDim.x * blockDim.y);
        f.lane = static_cast<unsigned>(t) % 32;
        f.warp = static_cast<unsigned>(t) / 32;
        ctx_make(&f.ctx, launch->stacks[static_cast<size_t>(t)].lo(), kStackSize, fiber_entry);
    }
    // Shared memory starts undefined: all-ones bytes read as NaN floats.
    if (shared_bytes) std::memset(kaiyuan_emu_dynamic_shared, 0xff, shared_bytes);
    for (;;) {
        for (int k = 0; k < n; ++k) {
            const int t = reverse ? n - 1 - k : k;
            if (launch->fibers[static_cast<size_t>(t)].state != READY) continue;
            run_fiber(launch, t);
            if (launch->failed) return;
        }
        int live = 0, at_barrier = 0;
        for (int t = 0; t < n; ++t) {
            const State s = launch->fibers[static_cast<size_t>(t)].state;
            live += s != DONE;
            at_barrier += s == AT_BARRIER;
        }
        if (live == 0) return;
        bool progress = false;
        for (int w = 0; w * 32 < n; ++w) {
            progress |= resolve_warp(launch, w);
            if (launch->failed) return;
        }
        if (!progress && at_barrier == live) {
            int count = 0;
            for (int t = 0; t < n; ++t) {
                Fiber& f = launch->fibers[static_cast<size_t>(t)];
                if (f.state != AT_BARRIER) continue;
                count += f.predicate;
                f.state = READY;
            }
            launch->barrier_count = count;
            launch->barrier_arrived = live;
            progress = true;
        }
        if (!progress) {
            describe_deadlock(launch);
            return;
        }
    }
}

bool ensure_threads(Launch* launch, int threads) {
    while (launch->stacks.size() < static_cast<size_t>(threads)) {
        Stack stack;
        stack.map_len = kStackSize + page_size();
        void* map = mmap(nullptr, stack.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
        if (map == MAP_FAILED) return false;
        stack.map = static_cast<char*>(map);
        mprotect(stack.map, page_size(), PROT_NONE);  // overflow faults here
        launch->stacks.push_back(stack);
    }
    if (launch->fibers.size() < static_cast<size_t>(threads)) launch->fibers.resize(static_cast<size_t>(threads));
    const size_t warps = static_cast<size_t>((threads + 31) / 32);
    if (launch->warps.size() < warps) launch->warps.resize(warps);
    return true;
}

const char* stack_overflow_of(const Launch* launch, const void* address) {
    const auto a = reinterpret_cast<uintptr_t>(address);
    for (const Stack& s : launch->stacks) {
        const auto lo = reinterpret_cast<uintptr_t>(s.map);
        if (a >= lo && a < lo + page_size()) return "a stack overflow of an emulated thread (256 KiB each)";
    }
    return nullptr;
}

void fill_report(Launch* launch, EmuReport* report) {
    report->kind = launch->fail_kind;
    report->in_thread = launch->fail_in_thread;
    report->block[0] = launch->fail_block.x;
    report->block[1] = launch->fail_block.y;
    report->block[2] = launch->fail_block.z;
    report->thread[0] = launch->fail_thread.x;
    report->thread[1] = launch->fail_thread.y;
    report->thread[2] = launch->fail_thread.z;
    if (launch->fail_kind == KAIYUAN_EMU_FAULT) {
        report->signal = launch->fault_signal;
        report->fault_address = reinterpret_cast<uintptr_t>(launch->fault_address);
        Dl_info info{};
        if (launch->fault_pc && dladdr(reinterpret_cast<void*>(launch->fault_pc), &info) && info.dli_fname) {
            snprintf(report->object, sizeof report->object, "%s", info.dli_fname);
            report->pc_offset = launch->fault_pc - reinterpret_cast<uintptr_t>(info.dli_fbase);
        }
        const char* what = nullptr;
        switch (launch->fault_signal) {
            case SIGSEGV:
            case SIGBUS:
                what = stack_overflow_of(launch, launch->fault_address);
                if (!what) what = "an invalid memory access";
                break;
            case SIGILL:
                what = "a failed check (an array index out of bounds, a misaligned or null pointer: the kernels are "
                       "compiled with -fsanitize=bounds,alignment,null trapping) or __trap()";
                break;
            case SIGFPE: what = "an arithmetic fault (integer division by zero)"; break;
            default: what = "a signal"; break;
        }
        snprintf(report->message, sizeof report->message, "%s", what);
    } else {
        snprintf(report->message, sizeof report->message, "%s", launch->message);
    }
}

}  // namespace

// ---- the C interface ----------------------------------------------------------------
extern "C" {

int kaiyuan_emu_syncthreads(int predicate, int* arrived) noexcept {
    Fiber& fiber = current_fiber();
    fiber.predicate = predicate != 0;
    fiber.state = AT_BARRIER;
    yield_to_scheduler();
    if (arrived) *arrived = t_active->barrier_arrived;
    return t_active->barrier_count;
}

const EmuWarpResult* kaiyuan_emu_warp(int op, const char* name, unsigned int mask, const unsigned long long* payload,
                                      int words) noexcept {
    Fiber& fiber = current_fiber();
    if (words < 0 || words > KAIYUAN_EMU_WARP_WORDS) {
        set_message(t_active, "%s: %d payload words (the emulator has room for %d)", name, words,
                    KAIYUAN_EMU_WARP_WORDS);
        fail_here(KAIYUAN_EMU_KERNEL_ERROR);
    }
    if (!(mask >> fiber.lane & 1)) {
        set_message(t_active, "%s with mask 0x%08x called by lane %u, which the mask does not name", name, mask,
                    fiber.lane);
        fail_here(KAIYUAN_EMU_KERNEL_ERROR);
    }
    fiber.op = op;
    fiber.op_name = name;
    fiber.mask = mask;
    fiber.words = words;
    if (words) std::memcpy(fiber.payload, payload, sizeof(unsigned long long) * static_cast<size_t>(words));
    fiber.state = AT_WARP;
    yield_to_scheduler();
    return &t_active->warps[fiber.warp].result;
}

unsigned int kaiyuan_emu_lane(void) noexcept { return current_fiber().lane; }

unsigned int kaiyuan_emu_active_mask(void) noexcept {
    Launch* launch = t_active;
    const Fiber& fiber = current_fiber();
    const int first = static_cast<int>(fiber.warp) * 32;
    unsigned mask = 0;
    for (int t = first; t < first + 32 && t < launch->threads; ++t)
        if (launch->fibers[static_cast<size_t>(t)].state != DONE) mask |= 1u << (t - first);
    return mask;
}

void kaiyuan_emu_fail(const char* message) noexcept {
    snprintf(t_active->message, sizeof t_active->message, "%s", message);
    fail_here(KAIYUAN_EMU_KERNEL_ERROR);
}

void kaiyuan_emu_cp_async(void* dst, const void* src, int cp_bytes, int src_bytes) noexcept {
    if (cp_bytes != 4 && cp_bytes != 8 && cp_bytes != 16) {
        set_message(t_active, "cp.async of %d bytes (4, 8 or 16)", cp_bytes);
        fail_here(KAIYUAN_EMU_KERNEL_ERROR);
    }
    if (src_bytes < 0 || src_bytes > cp_bytes) {
        set_message(t_active, "cp.async reads %d of %d bytes", src_bytes, cp_bytes);
        fail_here(KAIYUAN_EMU_KERNEL_ERROR);
    }
    const auto align = static_cast<uintptr_t>(cp_bytes) - 1;
    if ((reinterpret_cast<uintptr_t>(dst) & align) || (src_bytes && (reinterpret_cast<uintptr_t>(src) & align))) {
        set_message(t_active, "cp.async of %d bytes with a misaligned address (dst %p, src %p)", cp_bytes, dst, src);
        fail_here(KAIYUAN_EMU_KERNEL_ERROR);
    }
    // The data arrives only when its group is waited for; until then the
    // destination reads as NaN, so a missing wait shows.
    std::memset(dst, 0xff, static_cast<size_t>(cp_bytes));
    current_fiber().open.push_back(Copy{dst, src, cp_bytes, src_bytes});
}

void kaiyuan_emu_cp_async_commit(void) noexcept {
    Fiber& fiber = current_fiber();
    fiber.groups.push_back(fiber.open);
    fiber.open.clear();
}

void kaiyuan_emu_cp_async_wait(int pending) noexcept {
    Fiber& fiber = current_fiber();
    while (static_cast<int>(fiber.groups.size()) > pending) {
        for (const Copy& copy : fiber.groups.front()) complete(copy);
        fiber.groups.erase(fiber.groups.begin());
    }
}

unsigned int kaiyuan_emu_report_size(void) noexcept { return sizeof(EmuReport); }

int kaiyuan_emu_launch(void* kernel, const unsigned int* grid, const unsigned int* block, unsigned int shared_bytes,
                       const unsigned long long* ints, int n_ints, const float* floats, int n_floats,
                       unsigned int flags, EmuReport* report) noexcept {
    std::memset(report, 0, sizeof *report);
    auto refuse = [&](const char* format, auto... args) {
        report->kind = KAIYUAN_EMU_BAD_LAUNCH;
        snprintf(report->message, sizeof report->message, format, args...);
        return KAIYUAN_EMU_BAD_LAUNCH;
    };
    if (kernel == nullptr) return refuse("no kernel");
    if (n_ints < 0 || n_ints > KAIYUAN_EMU_MAX_INT_ARGS)
        return refuse("%d integer/pointer arguments (the emulator's trampoline passes at most %d)", n_ints,
                      KAIYUAN_EMU_MAX_INT_ARGS);
    if (n_floats < 0 || n_floats > KAIYUAN_EMU_MAX_FLOAT_ARGS)
        return refuse("%d float arguments (the emulator's trampoline passes at most %d)", n_floats,
                      KAIYUAN_EMU_MAX_FLOAT_ARGS);
    if (shared_bytes > KAIYUAN_EMU_MAX_DYNAMIC_SHARED)
        return refuse("%u bytes of dynamic shared memory (at most %d)", shared_bytes, KAIYUAN_EMU_MAX_DYNAMIC_SHARED);
    const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024) return refuse("%llu threads per block (1 to 1024)", threads);
    if (1ull * grid[0] * grid[1] * grid[2] == 0) return refuse("an empty grid");
    if (t_active != nullptr) return refuse("a launch from inside a kernel");

    install_signal_handlers();
    t_alt_stack.ensure();
    Launch* launch = &t_launch;
    if (!ensure_threads(launch, static_cast<int>(threads))) return refuse("no memory for %llu thread stacks", threads);
    launch->threads = static_cast<int>(threads);
    launch->kernel = kernel;
    for (int i = 0; i < KAIYUAN_EMU_MAX_INT_ARGS; ++i) launch->ints[i] = i < n_ints ? ints[i] : 0;
    for (int i = 0; i < KAIYUAN_EMU_MAX_FLOAT_ARGS; ++i) launch->floats[i] = i < n_floats ? floats[i] : 0.0f;
    launch->failed = false;
    launch->fail_kind = KAIYUAN_EMU_OK;
    launch->current = -1;
    launch->in_fiber = false;
    launch->message[0] = 0;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};

    t_active = launch;
    unsigned long long linear = 0;
    for (unsigned z = 0; z < grid[2] && !launch->failed; ++z)
        for (unsigned y = 0; y < grid[1] && !launch->failed; ++y)
            for (unsigned x = 0; x < grid[0] && !launch->failed; ++x, ++linear) {
                blockIdx = uint3{x, y, z};
                const bool reverse = (flags & 1u) ? true : (flags & 2u) ? false : (linear & 1u);
                run_block(launch, shared_bytes, reverse);
                if (launch->failed) break;
            }
    t_active = nullptr;
    launch->current = -1;
    if (!launch->failed) return KAIYUAN_EMU_OK;
    fill_report(launch, report);
    return report->kind;
}

}  // extern "C"
