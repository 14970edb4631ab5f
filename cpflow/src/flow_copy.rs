//! Independent copies of a [`Flow`] or an [`ImageFlow`]: on the same device
//! ([`Flow::try_clone`], [`ImageFlow::try_clone`]) or another ([`Flow::to_device`],
//! [`ImageFlow::to_device`]). A flow's variables live in its `VarMap` and are shared by every
//! handle to them, so a derived `Clone` would alias the weights: training one copy would move
//! the other. These build a new flow from the same configuration and copy every variable's
//! values (the ActNorm initialisation flags included).

use std::collections::HashMap;

use candle_core::Device;

use crate::error::Result;
use crate::flow::Flow;
use crate::image::ImageFlow;

impl Flow {
    /// A deep copy on the same device: same configuration, same weights (copied, not shared),
    /// same initialisation state. Training or [`Flow::set_weights`] on either leaves the other
    /// unchanged: a snapshot of the best weights during training, or a second model to
    /// fine-tune from the same start.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let config = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    /// let flow = Flow::new(config, &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5], [-0.7, 0.0]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let copy = flow.try_clone()?;
    /// let before = copy.log_prob(&x)?.to_vec1::<f64>()?;
    /// assert_eq!(flow.log_prob(&x)?.to_vec1::<f64>()?, before);
    /// // Moving the original's weights leaves the copy's densities as they were.
    /// let moved: std::collections::HashMap<_, _> = flow
    ///     .weight_tensors()
    ///     .into_iter()
    ///     .map(|(name, t)| Ok((name, t.affine(1.1, 0.01)?)))
    ///     .collect::<cpflow::Result<_>>()?;
    /// flow.set_weights(&moved, "")?;
    /// assert_ne!(flow.log_prob(&x)?.to_vec1::<f64>()?, before);
    /// assert_eq!(copy.log_prob(&x)?.to_vec1::<f64>()?, before);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Result<Flow> {
        self.to_device(self.device())
    }

    /// A deep copy on `device` (e.g. a flow trained on the CPU moved to a CUDA device, or
    /// back): same configuration, dtype and weights. On the flow's own device this is
    /// [`Flow::try_clone`].
    pub fn to_device(&self, device: &Device) -> Result<Flow> {
        let copy = Flow::new(self.config().clone(), device)?;
        let weights: HashMap<String, _> = self.weight_tensors().into_iter().collect();
        copy.set_weights(&weights, "")?;
        Ok(copy)
    }
}

impl ImageFlow {
    /// A deep copy on the same device, as [`Flow::try_clone`]: same configuration, weights
    /// copied (not shared), same initialisation state. E.g. the weights of an evaluation kept
    /// apart from a model that goes on training.
    pub fn try_clone(&self) -> Result<ImageFlow> {
        self.to_device(self.device())
    }

    /// A deep copy on `device`, same configuration, dtype and weights (as [`Flow::to_device`]).
    pub fn to_device(&self, device: &Device) -> Result<ImageFlow> {
        let copy = ImageFlow::new(self.config().clone(), device)?;
        let weights: HashMap<String, _> = self.weight_tensors().into_iter().collect();
        copy.set_weights(&weights, "")?;
        Ok(copy)
    }
}
