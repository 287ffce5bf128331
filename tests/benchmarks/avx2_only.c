/*
 * avx2_only.c: make an AVX-512 x86-64 Linux machine look like an AVX2-only one to every library in a process
 * (issue 21), so a runtime that picks its kernels from CPUID alone (ONNX Runtime's MLAS, OpenVINO, oneDNN, ATen)
 * runs the AVX2 kernels it would run on an AVX2-only workstation, at this machine's native speed.
 *
 * How: loaded with LD_PRELOAD, a constructor turns on CPUID faulting for the process (arch_prctl ARCH_SET_CPUID 0;
 * the kernel needs the cpu flag "cpuid_fault", and the setting is inherited by every thread and fork). Each CPUID
 * instruction then raises SIGSEGV; the handler runs the real CPUID with faulting briefly off, clears the AVX-512,
 * AVX-VNNI, AVX10 and AMX feature bits, writes the registers back and steps over the instruction. Libraries query
 * CPUID once when they load, so the cost is a few signals per library.
 *
 * Build and use (tests/benchmarks/avx2-only.sh does both):
 *     cc -O2 -shared -fPIC -o avx2_only.so avx2_only.c
 *     LD_PRELOAD=$PWD/avx2_only.so python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
 * AVX2_ONLY_LOG=1 prints each masked leaf to stderr, to see which libraries asked.
 *
 * A benchmark tool, not part of condiff.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int log_leaves;

static long set_cpuid_enabled(unsigned long enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

/* Bits cleared, by (leaf, subleaf, register); see the Intel SDM / AMD APM CPUID tables. */
static void mask_features(unsigned leaf, unsigned subleaf, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
    if (leaf == 7 && subleaf == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4, AVX10 19 */
        *a &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        *d &= ~((1u << 4) | (1u << 19));
    } else if (leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AVX10 description leaf */
    } else {
        return;
    }
    if (log_leaves) {
        char line[96];
        int n = snprintf(line, sizeof line, "avx2_only: leaf %#x.%u masked\n", leaf, subleaf);
        if (n > 0) (void)!write(2, line, (size_t)n);
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: let it kill the process as it would have */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)regs[REG_RAX], subleaf = (unsigned)regs[REG_RCX], a, b, c, d;
    set_cpuid_enabled(1);
    __cpuid_count(leaf, subleaf, a, b, c, d);
    set_cpuid_enabled(0);
    mask_features(leaf, subleaf, &a, &b, &c, &d);
    regs[REG_RAX] = a;
    regs[REG_RBX] = b;
    regs[REG_RCX] = c;
    regs[REG_RDX] = d;
    regs[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    log_leaves = getenv("AVX2_ONLY_LOG") != NULL;
    if (sigaction(SIGSEGV, &action, NULL) != 0 || set_cpuid_enabled(0) != 0) {
        static const char msg[] = "avx2_only: this kernel or CPU cannot fault on CPUID (no cpuid_fault); not masked\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(3);
    }
}
