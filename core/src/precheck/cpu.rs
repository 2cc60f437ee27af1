//! The CPU features a process may use: the ISA flags of /proc/cpuinfo that user space can
//! see and use, and the XSAVE features (the XCR0 the kernel enabled, the xstate header's
//! xfeatures of each thread).

/// Prefixes of the /proc/cpuinfo flags that name instructions or state user code can use
/// (cpuid bits a program tests before taking a faster path). The others (kernel-internal,
/// mitigations, virtualisation hints such as `hypervisor` or `constant_tsc`) differ between
/// hosts without a process noticing, so they are not judged.
const USER_FLAG_PREFIXES: &[&str] = &[
    "3dnow",
    "abm",
    "adx",
    "aes",
    "amx",
    "avx",
    "bmi",
    "clflushopt",
    "clwb",
    "clzero",
    "cmov",
    "cx8",
    "cx16",
    "erms",
    "f16c",
    "fma",
    "fpu",
    "fsgsbase",
    "fsrm",
    "fxsr",
    "gfni",
    "lahf_lm",
    "lm",
    "mmx",
    "movbe",
    "movdir",
    "pclmulqdq",
    "pku",
    "popcnt",
    "prefetchw",
    "rdpid",
    "rdrand",
    "rdseed",
    "rtm",
    "hle",
    "serialize",
    "sha_ni",
    "sse",
    "ssse3",
    "vaes",
    "vpclmulqdq",
    "waitpkg",
    "xsave",
    "xop",
    "fma4",
    "tbm",
];

/// The user-space flags among `cpuinfo` text's first `flags` line, sorted.
pub(super) fn user_flags(cpuinfo: &str) -> Vec<String> {
    let Some(line) = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("flags")
            .and_then(|r| r.trim_start().strip_prefix(':'))
    }) else {
        return Vec::new();
    };
    let mut flags: Vec<String> = line
        .split_whitespace()
        .filter(|f| USER_FLAG_PREFIXES.iter().any(|p| f.starts_with(p)))
        .map(str::to_string)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// This host's user-space flags.
pub(super) fn host_flags() -> Vec<String> {
    user_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

/// Where ptrace's NT_X86_XSTATE leaves XCR0 (the software-reserved bytes of the legacy area).
const XCR0_AT: usize = 464;
/// The XSAVE header's xfeatures (XSTATE_BV) after the 512-byte legacy area.
const XFEATURES_AT: usize = 512;

fn word(xstate: &[u8], at: usize) -> u64 {
    xstate
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// (XCR0, xfeatures) of one thread's NT_X86_XSTATE bytes (0 where absent).
pub(super) fn xstate_masks(xstate: &[u8]) -> (u64, u64) {
    (word(xstate, XCR0_AT), word(xstate, XFEATURES_AT))
}

/// Names of the XSAVE state components in `mask` (bit numbers of the SDM).
pub(super) fn xfeature_names(mask: u64) -> String {
    const NAMES: &[&str] = &[
        "x87",
        "sse",
        "avx",
        "bndregs",
        "bndcsr",
        "avx512_opmask",
        "avx512_zmm_hi256",
        "avx512_hi16_zmm",
        "pt",
        "pkru",
        "pasid",
        "cet_u",
        "cet_s",
        "hdc",
        "uintr",
        "lbr",
        "hwp",
        "amx_tilecfg",
        "amx_tiledata",
        "apx",
    ];
    (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| {
            NAMES
                .get(b)
                .map_or_else(|| format!("bit{b}"), |n| n.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_flags_are_kept() {
        let text = "processor : 0\nflags\t\t: fpu vme sse2 hypervisor avx2 constant_tsc sha_ni\n";
        assert_eq!(user_flags(text), ["avx2", "fpu", "sha_ni", "sse2"]);
    }

    #[test]
    fn xfeatures_are_named() {
        assert_eq!(xfeature_names(0b111), "x87,sse,avx");
        assert_eq!(xfeature_names(1 << 40), "bit40");
    }
}
