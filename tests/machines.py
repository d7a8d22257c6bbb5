"""Machines other than the one running the suite, as trees a daemon reads through `RK_SYSFS_ROOT`:
`proc/cpuinfo` (CPU features: AMX, AVX2, ARM cores) and `sys/devices/system/cpu` (cores, big.LITTLE).

`machine(root, "sapphire-rapids")` writes one and returns its root. The cpuinfo texts are cut from real
machines' files down to the lines rk reads plus a few neighbours, so a parser that leans on the wrong
line fails here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_X86_BASE = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht "
             "syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid pni pclmulqdq ssse3 "
             "fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm "
             "3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt xsaveopt xsavec xgetbv1")
_SPR_EXTRA = ("avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi umip pku ospke waitpkg avx512_vbmi2 "
              "gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq rdpid cldemote movdiri movdir64b "
              "serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities")
_ARM_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


def _x86_cpuinfo(model: str, flags: str, n: int) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: {model}\n"
                   f"flags\t\t: {flags}\nbugs\t\t: spectre_v1 spectre_v2\n\n" for i in range(n))


def _arm_cpuinfo(parts: list[str]) -> str:
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 48.00\nFeatures\t: {_ARM_FEATURES}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: {'0x4' if p == '0xd0b' else '0x2'}\nCPU part\t: {p}\n"
                   f"CPU revision\t: 0\n\n" for i, p in enumerate(parts))


@dataclass(frozen=True)
class Machine:
    cpuinfo: str
    cpus: list[dict[str, Any]]  # per CPU for `fake_cpus`: core (siblings list), capacity, freq, offline


MACHINES: dict[str, Machine] = {
    # Intel Xeon 4th gen (Sapphire Rapids): AMX, where llama.cpp's AMX repack crashes; 2 cores x 2 threads
    "sapphire-rapids": Machine(_x86_cpuinfo("Intel(R) Xeon(R) Platinum 8480+", f"{_X86_BASE} {_SPR_EXTRA}", 4),
                               [{"core": "0,2"}, {"core": "1,3"}, {"core": "0,2"}, {"core": "1,3"}]),
    # a desktop with AVX2 and no AVX-512 or AMX: llama.cpp's x86 repack is safe and on
    "avx2-desktop": Machine(_x86_cpuinfo("Intel(R) Core(TM) i5-8400 CPU @ 2.80GHz", _X86_BASE, 4), [{}] * 4),
    # RK3588: 4x Cortex-A55 (0xd05, cpu0-3) + 4x Cortex-A76 (0xd0b, cpu4-7); the repacked Q4_0 kernels are its fast path
    "rk3588": Machine(_arm_cpuinfo(["0xd05"] * 4 + ["0xd0b"] * 4), [{"capacity": 414}] * 4 + [{"capacity": 1024}] * 4),
}


def fake_cpus(root: Path, cpus: list[dict[str, Any]]) -> Path:
    """`<root>/sys/devices/system/cpu/cpuN` for each CPU described (see `Machine.cpus`)."""
    base = root / "sys" / "devices" / "system" / "cpu"
    for i, c in enumerate(cpus):
        d = base / f"cpu{i}"
        (d / "topology").mkdir(parents=True)
        (d / "topology" / "core_cpus_list").write_text(c.get("core", str(i)) + "\n")
        if "capacity" in c:
            (d / "cpu_capacity").write_text(f"{c['capacity']}\n")
        if "freq" in c:
            (d / "cpufreq").mkdir()
            (d / "cpufreq" / "cpuinfo_max_freq").write_text(f"{c['freq']}\n")
        if c.get("offline"):
            (d / "online").write_text("0\n")
    return root


def machine(root: Path, name: str) -> Path:
    """Write the named machine's tree under `root` (point RK_SYSFS_ROOT at it); returns `root`."""
    m = MACHINES[name]
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(m.cpuinfo)
    return fake_cpus(root, m.cpus)
