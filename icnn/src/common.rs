//! Pieces shared by the architectures: config validation and the common trait impls.

use candle_nn::VarBuilder;

use crate::actnorm::ActNorm;
use crate::conv_geometry::ImageShape;
use crate::error::{IcnnError, Result};
use crate::layers::{Linear, PosLinear};
use crate::network::{GroupAct, GroupSpec};
use crate::parameter_count::check_parameter_count;

/// One hidden layer `k = 1..L−1` (or the output layer) of a chain-shaped network.
pub(crate) struct ChainLayer {
    pub pos: PosLinear,
    pub lin: Linear,
    pub actnorm: Option<ActNorm>,
}

/// Groups of a chain `z₁ = s̃(AN₀(W₀x + b₀))`, `z_{k+1} = s(AN_k(P_k z + A_k x + c_k))`,
/// `F = AN_L(P_L z + aᵀx)`; with `dense`, every layer sees the concatenation of all previous
/// layers (DenseNet style).
pub(crate) fn chain_groups(
    first: (Linear, Option<ActNorm>, GroupAct),
    hidden: Vec<ChainLayer>,
    act: GroupAct,
    output: ChainLayer,
    dense: bool,
) -> Vec<GroupSpec> {
    let width = first.0.n_out();
    let mut groups = Vec::with_capacity(hidden.len() + 2);
    groups.push(GroupSpec {
        inputs: vec![],
        pos: None,
        lin: Some(first.0),
        actnorm: first.1,
        act: first.2,
        width,
    });
    let inputs = |k: usize| -> Vec<usize> { if dense { (0..k).collect() } else { vec![k - 1] } };
    for (i, layer) in hidden.into_iter().enumerate() {
        let k = i + 1;
        let width = layer.pos.n_out();
        groups.push(GroupSpec {
            inputs: inputs(k),
            pos: Some(layer.pos),
            lin: Some(layer.lin),
            actnorm: layer.actnorm,
            act,
            width,
        });
    }
    let k = groups.len();
    groups.push(GroupSpec {
        inputs: inputs(k),
        pos: Some(output.pos),
        lin: Some(output.lin),
        actnorm: output.actnorm,
        act: GroupAct::Identity,
        width: 1,
    });
    groups
}

/// [`chain_groups`] with the reference's ActNorms (`Icnn2`, `DenseIcnn2`, `Picnn`):
/// `actnorm0` after the first layer, `actnorms.{k−1}` after hidden layer `k` and
/// `actnorms.{L−1}` (one feature) after the output, created in that order. ActNorms draw no
/// random numbers, so the caller's weight draws keep the reference's order.
pub(crate) fn chain_groups_with_actnorms(
    vb: &VarBuilder,
    first: (Linear, GroupAct),
    hidden: Vec<(PosLinear, Linear)>,
    act: GroupAct,
    output: (PosLinear, Linear),
    dense: bool,
) -> Result<Vec<GroupSpec>> {
    let va = vb.pp("actnorms");
    let an0 = ActNorm::new(&vb.pp("actnorm0"), first.0.n_out())?;
    let hidden = hidden
        .into_iter()
        .enumerate()
        .map(|(i, (pos, lin))| {
            let actnorm = Some(ActNorm::new(&va.pp(i), pos.n_out())?);
            Ok(ChainLayer { pos, lin, actnorm })
        })
        .collect::<Result<Vec<_>>>()?;
    let output = ChainLayer {
        actnorm: Some(ActNorm::new(&va.pp(hidden.len()), 1)?),
        pos: output.0,
        lin: output.1,
    };
    Ok(chain_groups(
        (first.0, Some(an0), first.1),
        hidden,
        act,
        output,
        dense,
    ))
}

pub(crate) fn check_positive(name: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(IcnnError::InvalidConfig(format!(
            "{name} must be at least 1"
        )));
    }
    Ok(())
}

/// The checks a dense ICNN configuration's `validate` starts with: each of `sizes` (name,
/// value) at least 1, in order, then at most [`crate::MAX_MODEL_PARAMETERS`] parameters, the
/// model named `{arch} (dim 2, width 8, depth 3)` by its sizes in that message.
pub(crate) fn check_dense_sizes(
    arch: &str,
    sizes: &[(&str, usize)],
    parameters: usize,
) -> Result<()> {
    for &(name, value) in sizes {
        check_positive(name, value)?;
    }
    let named: Vec<String> = sizes.iter().map(|(n, v)| format!("{n} {v}")).collect();
    check_parameter_count(&format!("{arch} ({})", named.join(", ")), parameters)
}

/// The checks a convolutional ICNN configuration's `validate` starts with: image channels,
/// `width` and `depth` at least 1, then at most [`crate::MAX_MODEL_PARAMETERS`] parameters,
/// the model named `model` in that message.
pub(crate) fn check_conv_sizes(
    model: &str,
    image: ImageShape,
    width: usize,
    depth: usize,
    parameters: usize,
) -> Result<()> {
    check_positive("image channels", image.channels)?;
    check_positive("width", width)?;
    check_positive("depth", depth)?;
    check_parameter_count(model, parameters)
}

/// Refuse an image without pixels (the message of the conv networks' graph check, which
/// would otherwise refuse it only after every layer was built), and one whose values in a
/// layer of `width` hidden channels (bounded by `(C + width)·H·W` per image) could not be
/// held in memory: `C·H·W` overflowed `usize` in [`ImageShape::dim`] and the constructors
/// panicked.
pub(crate) fn check_image(image: ImageShape, width: usize) -> Result<()> {
    if image.channels == 0 || image.height == 0 || image.width == 0 {
        return Err(IcnnError::InvalidConfig(format!(
            "empty image shape {image:?}"
        )));
    }
    let per_layer = image
        .channels
        .checked_add(width)
        .and_then(|c| c.checked_mul(image.height))
        .and_then(|n| n.checked_mul(image.width))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f64>());
    if per_layer.is_none() {
        return Err(IcnnError::InvalidConfig(format!(
            "image shape {image:?} with {width} hidden channels: one image's values in a layer \
             would not fit in memory"
        )));
    }
    Ok(())
}

/// Refuse an odd `width` of an architecture (`model`) that splits its hidden units in two
/// halves.
pub(crate) fn check_even_width(model: &str, width: usize) -> Result<()> {
    if !width.is_multiple_of(2) {
        return Err(IcnnError::InvalidConfig(format!(
            "{model} needs an even width, got {width}"
        )));
    }
    Ok(())
}

/// Implements `ConvexPotential` and the ActNorm-init helpers for an architecture holding a
/// `net: Network` field.
macro_rules! impl_unconditional {
    ($ty:ty) => {
        impl $crate::traits::ConvexPotential for $ty {
            fn potential(&self, x: &candle_core::Tensor) -> $crate::Result<candle_core::Tensor> {
                self.net.potential(x, None)
            }

            fn linearize(&self, x: &candle_core::Tensor) -> $crate::Result<$crate::Linearization> {
                self.net.linearize(x, None, true)
            }

            fn dim(&self) -> usize {
                self.net.dim
            }

            fn value_and_gradient(
                &self,
                x: &candle_core::Tensor,
            ) -> $crate::Result<(candle_core::Tensor, candle_core::Tensor)> {
                let lin = self.net.linearize(x, None, false)?;
                Ok((lin.potential(), lin.gradient()))
            }

            fn host_linearize(
                &self,
                x: &candle_core::Tensor,
            ) -> $crate::Result<Option<$crate::HostLinearization>> {
                self.net.host_linearize(x)
            }

            fn host_weights(&self) -> $crate::Result<Option<$crate::HostWeights>> {
                self.net.host_weights()
            }
        }

        impl $ty {
            /// Whether the ActNorm data-dependent initialisation has run (the
            /// `initialized` flag variable saved with the parameters is non-zero).
            pub fn is_initialized(&self) -> $crate::Result<bool> {
                self.net.is_initialized()
            }

            /// Sets the `initialized` flag without touching the ActNorm parameters (use it
            /// after loading weights that were trained elsewhere and lack the flag).
            pub fn mark_initialized(&self) -> $crate::Result<()> {
                self.net.set_initialized(true)
            }

            /// Runs the data-dependent ActNorm initialisation on the batch `x` now (even if
            /// it already ran) and sets the flag.
            ///
            /// Otherwise it runs automatically on the first `potential`/`linearize` call (or
            /// `host_linearize`, `value_and_gradient`), and the batch of that call becomes
            /// the network's normalisation for good. Should several threads make their first
            /// calls at once, one of their batches initialises (which one is up to the
            /// scheduler) and every call computes with the network it wrote; call
            /// `initialize` on a batch of your choosing before sharing the network to decide
            /// it (an explicit call replaces any init before it, a lazy one included).
            pub fn initialize(&self, x: &candle_core::Tensor) -> $crate::Result<()> {
                self.net.initialize(x, None)
            }
        }
    };
}

pub(crate) use impl_unconditional;
