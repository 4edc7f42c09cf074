//! Kernel sources: the WGSL files in `kernels/`, built into the binary, and the small
//! preprocessor that specialises them (`#if NAME` / `#elif NAME` / `#else` / `#endif`
//! blocks, and `$NAME` substitutions) before they are compiled and cached.

/// The WGSL source of each kernel family.
pub(crate) mod files {
    pub const FILL: &str = include_str!("../../../../kernels/fill.wgsl");
    pub const ELEMENTWISE: &str = include_str!("../../../../kernels/elementwise.wgsl");
    pub const REDUCE: &str = include_str!("../../../../kernels/reduce.wgsl");
    pub const GEMM: &str = include_str!("../../../../kernels/gemm.wgsl");
    pub const NORM: &str = include_str!("../../../../kernels/norm.wgsl");
    pub const SOFTMAX: &str = include_str!("../../../../kernels/softmax.wgsl");
    pub const ATTENTION: &str = include_str!("../../../../kernels/attention.wgsl");
    pub const INDEX: &str = include_str!("../../../../kernels/index.wgsl");
    pub const PHILOX: &str = include_str!("../../../../kernels/philox.wgsl");
    pub const ADAMW: &str = include_str!("../../../../kernels/adamw.wgsl");
}

/// `src` with the blocks of the flags in `flags` kept (others dropped) and each `$NAME`
/// of `subs` replaced. Blocks do not nest.
pub(crate) fn specialise(src: &str, flags: &[&str], subs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(src.len());
    // None: outside a block; Some((taken_already, emitting)).
    let mut block: Option<(bool, bool)> = None;
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(flag) = t.strip_prefix("#if ") {
            let on = flags.contains(&flag.trim());
            block = Some((on, on));
        } else if let Some(flag) = t.strip_prefix("#elif ") {
            let (taken, _) = block.expect("#elif inside #if");
            let on = !taken && flags.contains(&flag.trim());
            block = Some((taken || on, on));
        } else if t.starts_with("#else") {
            let (taken, _) = block.expect("#else inside #if");
            block = Some((true, !taken));
        } else if t.starts_with("#endif") {
            block = None;
        } else if block.is_none_or(|(_, emit)| emit) {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (name, value) in subs {
        out = out.replace(&format!("${name}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::specialise;

    #[test]
    fn keeps_the_chosen_block_and_substitutes() {
        let src = "a\n#if X\nx $V\n#elif Y\ny\n#else\nz\n#endif\nb $V\n";
        assert_eq!(specialise(src, &["X"], &[("V", "1")]), "a\nx 1\nb 1\n");
        assert_eq!(specialise(src, &["Y"], &[]), "a\ny\nb $V\n");
        assert_eq!(specialise(src, &[], &[]), "a\nz\nb $V\n");
    }
}
