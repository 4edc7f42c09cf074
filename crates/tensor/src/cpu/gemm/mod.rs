//! Blocked GEMM (placeholder until the tuned kernels land: a correct triple loop).

#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    _parallel: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc = a[i * rsa + p * csa].mul_add(b[p * rsb + j * csb], acc);
            }
            let d = &mut c[i * ldc + j];
            *d = if accumulate { *d + acc } else { acc };
        }
    }
}
#[allow(clippy::too_many_arguments)]
pub fn dgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    rsa: usize,
    csa: usize,
    b: &[f64],
    rsb: usize,
    csb: usize,
    c: &mut [f64],
    ldc: usize,
    accumulate: bool,
    _parallel: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc = a[i * rsa + p * csa].mul_add(b[p * rsb + j * csb], acc);
            }
            let d = &mut c[i * ldc + j];
            *d = if accumulate { *d + acc } else { acc };
        }
    }
}
