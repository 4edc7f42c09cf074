//! Run-time choice of micro-kernel: CPU feature detection, cached once, overridable by env var.

use std::sync::OnceLock;

/// Environment variable that forces a kernel: `avx512`, `avx2` or `generic`.
pub const KERNEL_ENV: &str = "KUOSAN_GEMM_KERNEL";

/// A family of micro-kernels (one per element type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512F, 6×64 f32 / 6×32 f64 tiles (x86-64 only).
    Avx512,
    /// AVX2 + FMA, 6×16 f32 / 6×8 f64 tiles (x86-64 only).
    Avx2,
    /// Portable loops, any CPU.
    Generic,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Generic];

    /// The name used by [`KERNEL_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Generic => "generic",
        }
    }

    /// Parses a [`KERNEL_ENV`] value.
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 => false,
            Kernel::Generic => true,
        }
    }

    /// The kernels this CPU supports, fastest first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    /// The fastest kernel this CPU supports.
    pub fn detected() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Kernel::Generic)
    }

    /// The kernel `sgemm`/`dgemm` use: [`KERNEL_ENV`] if set to a supported kernel, else the
    /// detected one. Decided once per process; an unknown or unsupported request is reported
    /// on stderr and ignored.
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let detected = Kernel::detected();
            let Ok(request) = std::env::var(KERNEL_ENV) else {
                return detected;
            };
            match Kernel::from_name(request.trim()) {
                Some(k) if k.is_supported() => k,
                Some(k) => {
                    eprintln!(
                        "kuosan: {KERNEL_ENV}={} is not supported by this CPU; using {}",
                        k.name(),
                        detected.name()
                    );
                    detected
                }
                None => {
                    eprintln!(
                        "kuosan: unknown {KERNEL_ENV}={request:?} (expected avx512, avx2 or generic); using {}",
                        detected.name()
                    );
                    detected
                }
            }
        })
    }
}
