//! The CPU's user-space state as this host's kernel set it up: XCR0 (the XSAVE features the
//! kernel enabled), read with xgetbv (`cryo restore --check-only` compares it with a dump's).

/// XCR0 of this host, or None when the CPU or the kernel does not enable XSAVE (OSXSAVE).
pub fn xcr0() -> Option<u64> {
    // cpuid leaf 1 exists on every x86-64 CPU (a safe intrinsic).
    let leaf1 = std::arch::x86_64::__cpuid(1);
    // CPUID.1:ECX.OSXSAVE[bit 27]: the kernel set CR4.OSXSAVE, so xgetbv may be executed.
    if leaf1.ecx & (1 << 27) == 0 {
        return None;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx=0 reads XCR0; OSXSAVE is set (checked above), so it does not
    // fault; it writes only eax and edx and touches no memory.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    Some(u64::from(hi) << 32 | u64::from(lo))
}
