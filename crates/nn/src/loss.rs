//! Classification loss: softmax cross-entropy over class logits, as
//! torch.nn.functional.cross_entropy with mean reduction.

use crate::{Error, Result};
use kuosan_tensor::Tensor;

/// mean_b -log softmax(logits_b)[labels_b] for logits [B, K] and B labels in 0..K.
/// log-softmax is formed as z - log sum exp z with z = logits - max (the max is a
/// constant shift, so it is detached), which never takes the log of an underflowed 0.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let &[b, k] = logits.dims() else {
        return Err(Error::Arg(format!(
            "cross_entropy: logits must be [batch, classes], got {}",
            logits.shape()
        )));
    };
    if labels.len() != b {
        return Err(Error::Arg(format!(
            "cross_entropy: {} labels for a batch of {b}",
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(Error::Arg(format!(
            "cross_entropy: label {bad} out of range for {k} classes"
        )));
    }
    // one_hot: [B, K], -1/B at each label, so the sum is the mean NLL.
    // Built in f64 and rounded once to the logits' dtype.
    let mut one_hot = vec![0f64; b * k];
    for (i, &l) in labels.iter().enumerate() {
        one_hot[i * k + l] = -1.0 / b as f64;
    }
    let one_hot = Tensor::from_vec(one_hot, [b, k], logits.device())?.to_dtype(logits.dtype())?;
    let z = logits.sub(&logits.max(&[1], true)?.detach())?;
    let log_p = z.sub(&z.exp()?.sum(&[1], true)?.log()?)?;
    Ok(log_p.mul(&one_hot)?.sum_all()?)
}
