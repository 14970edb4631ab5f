//! [`detached_backward`]: candle's backward pass, with gradients that hold no graph.

use candle_core::Tensor;
use candle_core::backprop::GradStore;

/// The gradients of `loss` (candle's [`Tensor::backward`]), each detached from the graph of
/// the backward pass.
///
/// candle detaches the gradient of each node it back-propagates through, but not those of
/// the variables, which it never visits: a variable's gradient is the sum of products of
/// upstream gradients with forward tensors, and it keeps those operands (the zero tensor it
/// started from, the product, the parent node's gradient) alive through its graph for as long
/// as the gradient lives. For a network's weights that is several copies of the weights per
/// gradient store. Detaching shares the storage and drops the graph.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// # fn main() -> candle_core::Result<()> {
/// let w = Var::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
/// let loss = (w.as_tensor().exp()? * 2.0)?.sum_all()?;
/// let grads = icnn::detached_backward(&loss)?;
/// let g = grads.get(w.as_tensor()).expect("w's gradient");
/// // d/dw Σ 2 eʷ = 2 eʷ, with no graph behind it.
/// assert!(!g.track_op());
/// let want: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| 2.0 * v.exp()).collect();
/// assert_eq!(g.to_vec1::<f64>()?, want);
/// # Ok(()) }
/// ```
pub fn detached_backward(loss: &Tensor) -> candle_core::Result<GradStore> {
    let mut grads = loss.backward()?;
    let ids: Vec<_> = grads.get_ids().copied().collect();
    for id in ids {
        if let Some(g) = grads.get_id(id) {
            let d = g.detach();
            grads.insert_id(id, d);
        }
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    /// Why the detach: candle's own backward leaves the variables' gradients on a graph
    /// (they track). If a candle release stops doing so, this fails and the helper can go.
    #[test]
    fn candle_leaves_variable_gradients_on_a_graph() {
        let w = Var::new(&[0.5f64, -1.0], &Device::Cpu).unwrap();
        let loss = (w.as_tensor().exp().unwrap() * 3.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let plain = loss.backward().unwrap();
        assert!(plain.get(w.as_tensor()).unwrap().track_op());
        let detached = super::detached_backward(&loss).unwrap();
        let g = detached.get(w.as_tensor()).unwrap();
        assert!(!g.track_op());
        assert_eq!(
            g.to_vec1::<f64>().unwrap(),
            plain.get(w.as_tensor()).unwrap().to_vec1::<f64>().unwrap()
        );
    }
}
