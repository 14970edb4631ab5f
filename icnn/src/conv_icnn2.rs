//! `ConvIcnn2`: the reference's hybrid convolutional ICNN (`ConvICNN2`,
//! `train_img.py --icnn 2`): augmented channels, no output layer, no linear term.

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::actnorm::ActNorm;
use crate::common::{check_conv_sizes, check_even_width, check_image};
use crate::conv_geometry::{ConvGeometry, ImageShape};
use crate::conv_icnn::input_node;
use crate::conv_layers::{Conv2d, PosConv2d};
use crate::conv_network::{ConvInput, ConvNetwork, ConvNode, impl_conv_potential};
use crate::error::Result;
use crate::parameter_count as pc;

/// Configuration of [`ConvIcnn2`] (reference `ConvICNN2(dim=C, dimh, num_hidden_layers)`;
/// the reference accepts activation arguments and then overwrites them with the plain
/// softplus, so they are not fields). `width` must be even.
///
/// ```
/// use icnn::{ConvIcnn2, ConvIcnn2Config, ConvexPotential, IcnnError, ImageShape};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = ConvIcnn2Config { image: ImageShape::new(1, 4, 4), width: 4, depth: 2 };
/// let net = ConvIcnn2::new(vb.pp("icnn"), &config, &mut rng)?;
/// // Two 1×4×4 images, flattened to rows of 16.
/// let x = Tensor::arange(0.0f64, 32.0, &Device::Cpu)?.affine(0.1, -1.0)?.reshape((2, 16))?;
/// assert_eq!(net.potential(&x)?.dims(), &[2]);
/// // Half the channels are convex, half input-augmented: the width must be even.
/// let odd = ConvIcnn2Config { width: 3, ..config };
/// assert!(matches!(ConvIcnn2::new(vb.pp("odd"), &odd, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvIcnn2Config {
    /// Input image shape `(C, H, W)`.
    pub image: ImageShape,
    /// Hidden channels `h` (even).
    pub width: usize,
    /// Number of layers `L`, at least 1.
    pub depth: usize,
}

impl Default for ConvIcnn2Config {
    fn default() -> Self {
        Self {
            image: ImageShape::default(),
            width: 64,
            depth: 3,
        }
    }
}

impl ConvIcnn2Config {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::ConvIcnn2Config { image: icnn::ImageShape::new(1, 8, 8), width: 4, depth: 2 };
    /// assert_eq!(config.parameter_count(), 318);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (c, h, l) = (self.image.channels, self.width, self.depth);
        let (hh, hidden, k) = (h / 2, l.saturating_sub(1), ConvGeometry::SAME_3X3.kernel);
        pc::sum([
            pc::mul(2, pc::conv(c, h, k, true)),
            pc::mul(hidden, pc::mul(3, pc::conv(h, hh, k, true))),
            pc::mul(l, pc::actnorm(hh)),
            pc::actnorm(h),
        ])
    }

    /// Checks the configuration without building anything: image channels, `width` and
    /// `depth` at least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters, an even
    /// `width` (half the channels are convex, half input-augmented) and an image of at least
    /// one pixel whose values in a layer (`(C + width)·H·W` per image) memory can address.
    /// [`ConvIcnn2::new`] runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::ConvIcnn2Config;
    /// assert!(ConvIcnn2Config::default().validate().is_ok());
    /// let odd = ConvIcnn2Config { width: 3, ..Default::default() };
    /// assert_eq!(
    ///     odd.validate().unwrap_err().to_string(),
    ///     "invalid configuration: ConvIcnn2 needs an even width, got 3"
    /// );
    /// ```
    pub fn validate(&self) -> Result<()> {
        let (h, l) = (self.width, self.depth);
        let model = format!("ConvIcnn2 (image {:?}, width {h}, depth {l})", self.image);
        check_conv_sizes(&model, self.image, h, l, self.parameter_count())?;
        check_even_width("ConvIcnn2", h)?;
        check_image(self.image, self.width)
    }
}

/// The reference's `ConvICNN2` (every convolution 3×3, stride 1, padding 1, with bias):
/// ```text
/// z  = sp(AN_first(Conv_{C→h}(x))),  x' = Conv_{C→h}(x)          Wz0, Wx0, actnorm_first
/// ẑ  = sp(AN_k(PosConv_{h→h/2}(z) + Conv_{h→h/2}(x')))          step.0.k, step.1.k, step.3.k
/// g  = sp(Conv_{h→h/2}(x')) − Conv_{h→h/2}(x')/2                step.2.k
/// z  = concat_channels(ẑ, g)                                     k = 1..L−1
/// F(x) = Σ_channels mean_{H,W}(z)
/// ```
/// Parameter names: `Wz0.*`, `Wx0.*`, `step.0.k.*` (positive), `step.1.k.*`, `step.2.k.*`,
/// `step.3.k.{b,logs}` (`L` of width `h/2`; the last is unused, as in the reference),
/// `actnorm_first.{b,logs}`, plus `initialized`. Inputs and outputs as [`crate::ConvIcnn`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvIcnn2, ConvIcnn2Config, ConvexPotential, ImageShape};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = ConvIcnn2Config { image: ImageShape::new(1, 4, 4), width: 4, depth: 2 };
/// let net = ConvIcnn2::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(2))?;
/// let x = Tensor::arange(0f32, 48.0, &Device::Cpu)?.affine(0.05, -1.0)?.reshape((3, 16))?;
/// assert_eq!(net.potential(&x)?.dims(), &[3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConvIcnn2 {
    pub(crate) net: ConvNetwork,
    config: ConvIcnn2Config,
}

impl ConvIcnn2 {
    /// Creates (or loads) the parameters, drawing initial values from `rng` in the
    /// reference's construction order.
    pub fn new<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &ConvIcnn2Config,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        let (c, h, l) = (config.image.channels, config.width, config.depth);
        let hh = h / 2;
        let g3 = ConvGeometry::SAME_3X3;
        let sp = Activation::new(ActivationKind::Softplus);
        let symm = sp.with_symmetric(true);
        let wz0 = Conv2d::new(&vb.pp("Wz0"), c, h, g3, true, rng)?;
        let wx0 = Conv2d::new(&vb.pp("Wx0"), c, h, g3, true, rng)?;
        let vs = vb.pp("step");
        let wzs = (0..l - 1)
            .map(|k| PosConv2d::new(&vs.pp(0).pp(k), h, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let wxs = (0..l - 1)
            .map(|k| Conv2d::new(&vs.pp(1).pp(k), h, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let wx2s = (0..l - 1)
            .map(|k| Conv2d::new(&vs.pp(2).pp(k), h, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let actnorms = (0..l)
            .map(|k| ActNorm::new(&vs.pp(3).pp(k), hh))
            .collect::<Result<Vec<_>>>()?;
        let actnorm_first = ActNorm::new(&vb.pp("actnorm_first"), h)?;

        let mut nodes = vec![input_node()];
        nodes.push(ConvNode {
            inputs: vec![ConvInput::plain(wz0, vec![0])],
            actnorm: Some(actnorm_first),
            act: Some(sp),
            readout: false,
        });
        nodes.push(ConvNode {
            inputs: vec![ConvInput::plain(wx0, vec![0])],
            actnorm: None,
            act: None,
            readout: false,
        });
        let mut state = vec![1];
        for ((wz, wx), (wx2, an)) in wzs.into_iter().zip(wxs).zip(wx2s.into_iter().zip(actnorms)) {
            nodes.push(ConvNode {
                inputs: vec![
                    ConvInput::positive(wz, state.clone()),
                    ConvInput::plain(wx, vec![2]),
                ],
                actnorm: Some(an),
                act: Some(sp),
                readout: false,
            });
            nodes.push(ConvNode {
                inputs: vec![ConvInput::plain(wx2, vec![2])],
                actnorm: None,
                act: Some(symm),
                readout: false,
            });
            state = vec![nodes.len() - 2, nodes.len() - 1];
        }
        for &s in &state {
            nodes[s].readout = true;
        }
        Ok(Self {
            net: ConvNetwork::new(&vb, config.image, nodes)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConvIcnn2Config {
        &self.config
    }
}

impl_conv_potential!(ConvIcnn2);
