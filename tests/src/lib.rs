//! Shared helpers for the workspace tests: random tensors, comparisons, reference plumbing.
