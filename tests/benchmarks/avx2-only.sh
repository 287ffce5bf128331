#!/usr/bin/env bash
# Run a command as if this AVX-512 machine were an AVX2-only one, for every library in it (issue 21):
#     tests/benchmarks/avx2-only.sh python tests/benchmarks/probe_runtimes.py --threads 2
#     tests/benchmarks/avx2-only.sh condiff-engine bench --model resources/models/condiff-t1-small
# Builds avx2_only.c (CPUID faulting + masked feature bits; see its header) once into a cache folder, then runs the
# command with it preloaded. Needs x86-64 Linux with the cpu flag cpuid_fault, and a C compiler.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/condiff-bench"
lib="$cache/avx2_only.so"
if [[ ! -f "$lib" || "$here/avx2_only.c" -nt "$lib" ]]; then
    mkdir -p "$cache"
    "${CC:-cc}" -O2 -Wall -shared -fPIC -o "$lib.tmp" "$here/avx2_only.c"
    mv "$lib.tmp" "$lib"
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
