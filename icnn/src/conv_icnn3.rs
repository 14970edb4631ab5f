//! `ConvIcnn3`: the reference's input-augmented convolutional ICNN (`ConvICNN3`,
//! `train_img.py --icnn 3`), the conv analogue of `Icnn3`.

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

/// Configuration of [`ConvIcnn3`] (reference `ConvICNN3(dim=C, dimh, num_hidden_layers,
/// symm_act_first, softplus_type, zero_softplus)`; the reference ignores `symm_act_first`
/// and always uses the symmetric first activation, so it is not a field). `width` must be
/// even.
///
/// ```
/// use icnn::{ConvIcnn3, ConvIcnn3Config, ConvexPotential, IcnnError, ImageShape};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// assert!(ConvIcnn3Config::default().zero_shift); // as the reference
/// let config = ConvIcnn3Config { image: ImageShape::new(1, 4, 4), width: 4, depth: 2, ..Default::default() };
/// let net = ConvIcnn3::new(vb.pp("icnn"), &config, &mut rng)?;
/// // Two 1×4×4 images, flattened to rows of 16.
/// let x = Tensor::arange(0.0f64, 32.0, &Device::Cpu)?.affine(0.1, -1.0)?.reshape((2, 16))?;
/// // vᵀ∇²F v ≥ 0 along any direction: the potential is convex.
/// let v = Tensor::ones((2, 16), DType::F64, &Device::Cpu)?;
/// let vhv = (net.linearize(&x)?.hvp(&v)? * &v)?.sum(1)?.to_vec1::<f64>()?;
/// assert!(vhv.iter().all(|&q| q >= -1e-12));
/// let bad = ConvIcnn3Config { depth: 0, ..config };
/// assert!(matches!(ConvIcnn3::new(vb.pp("bad"), &bad, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvIcnn3Config {
    /// Input image shape `(C, H, W)`.
    pub image: ImageShape,
    /// Hidden channels `h` (even): each hidden layer has `h/2` convex and `h/2` augmented
    /// channels.
    pub width: usize,
    /// Number of hidden layers `L`, at least 1.
    pub depth: usize,
    /// Activation `a` of the convex path (`softplus_type`; default softplus).
    pub activation: ActivationKind,
    /// Shift `a` to 0 at 0 (`zero_softplus`; default true, as the reference).
    pub zero_shift: bool,
}

impl Default for ConvIcnn3Config {
    fn default() -> Self {
        Self {
            image: ImageShape::default(),
            width: 64,
            depth: 3,
            activation: ActivationKind::Softplus,
            zero_shift: true,
        }
    }
}

impl ConvIcnn3Config {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::ConvIcnn3Config { image: icnn::ImageShape::new(1, 8, 8), width: 4, depth: 2, ..Default::default() };
    /// assert_eq!(config.parameter_count(), 209);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (c, h, l) = (self.image.channels, self.width, self.depth);
        let (hh, hidden, k) = (h / 2, l.saturating_sub(1), ConvGeometry::SAME_3X3.kernel);
        pc::sum([
            pc::conv(c, h, k, true),
            pc::mul(hidden, pc::conv(h, hh, k, true)),
            pc::conv(h, 1, k, false),
            pc::mul(hidden, pc::conv(c, hh, k, true)),
            pc::conv(c, 1, k, false),
            pc::mul(hidden, pc::conv(c, hh, k, true)),
            // `L` ActNorms of h/2 units and the reference's unused one-unit output ActNorm.
            pc::mul(l, pc::actnorm(hh)),
            pc::actnorm(1),
        ])
    }

    /// Checks the configuration without building anything: image channels, `width` and
    /// `depth` at least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters, an even
    /// `width` (half the channels are convex, half input-augmented) and an image of at least
    /// one pixel whose values in a layer (`(C + width)·H·W` per image) memory can address.
    /// [`ConvIcnn3::new`] runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::ConvIcnn3Config;
    /// assert!(ConvIcnn3Config::default().validate().is_ok());
    /// let odd = ConvIcnn3Config { width: 3, ..Default::default() };
    /// assert_eq!(
    ///     odd.validate().unwrap_err().to_string(),
    ///     "invalid configuration: ConvIcnn3 needs an even width, got 3"
    /// );
    /// ```
    pub fn validate(&self) -> Result<()> {
        let (h, l) = (self.width, self.depth);
        let model = format!("ConvIcnn3 (image {:?}, width {h}, depth {l})", self.image);
        check_conv_sizes(&model, self.image, h, l, self.parameter_count())?;
        check_even_width("ConvIcnn3", h)?;
        check_image(self.image, self.width)
    }
}

/// The reference's `ConvICNN3` (every convolution 3×3, stride 1, padding 1):
/// ```text
/// u = Conv_{C→h}(x),  z = a(u) − u/2                       Wzs.0 (no ActNorm)
/// ẑ = a(AN_k(PosConv_{h→h/2}(z) + Conv_{C→h/2}(x)))        Wzs.k, Wxs.{k−1}, actnorms.{k−1}
/// g = sp(Conv_{C→h/2}(x)) − Conv_{C→h/2}(x)/2              Wx2s.{k−1} (plain softplus)
/// z = concat_channels(ẑ, g)                                k = 1..L−1
/// F(x) = mean_{H,W}(PosConv_{h→1}(z) + Conv_{C→1}(x))      Wzs.L, Wxs.{L−1} (no biases)
/// ```
/// `a` is the configured activation (default `sp(u) − log 2`); skip convolutions read the raw
/// `x`. Parameter names: `Wzs.k.{weight,bias}` (`Wzs.L` without bias), `Wxs.k.{weight,bias}`
/// (`Wxs.{L−1}` without bias), `Wx2s.k.{weight,bias}`, `actnorms.k.{b,logs}` (`L` of width
/// `h/2` and `actnorms.L` of width 1; the last two are unused, as in the reference), plus
/// `initialized`. Inputs and outputs as [`crate::ConvIcnn`]: rows `(B, C·H·W)` or images.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvIcnn3, ConvIcnn3Config, ConvexPotential, ImageShape};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = ConvIcnn3Config { image: ImageShape::new(3, 4, 4), width: 4, depth: 2, ..Default::default() };
/// let net = ConvIcnn3::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(1))?;
/// // Images work too.
/// let x = Tensor::arange(0f64, 96.0, &Device::Cpu)?.affine(0.02, -1.0)?.reshape((2, 3, 4, 4))?;
/// let lin = net.linearize(&x)?;
/// assert_eq!(lin.gradient().dims(), &[2, 48]);
/// assert_eq!(lin.detach().hessian()?.dims(), &[2, 48, 48]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConvIcnn3 {
    pub(crate) net: ConvNetwork,
    config: ConvIcnn3Config,
}

impl ConvIcnn3 {
    /// Creates (or loads) the parameters, drawing initial values from `rng` in the
    /// reference's construction order (`Wzs`, `Wxs`, `Wx2s`).
    pub fn new<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &ConvIcnn3Config,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        let (c, h, l) = (config.image.channels, config.width, config.depth);
        let hh = h / 2;
        let g3 = ConvGeometry::SAME_3X3;
        let act = Activation::new(config.activation).with_zero_shift(config.zero_shift);
        let first = act.with_symmetric(true);
        let aug = Activation::new(ActivationKind::Softplus).with_symmetric(true);
        let (vz, vx, vx2, va) = (vb.pp("Wzs"), vb.pp("Wxs"), vb.pp("Wx2s"), vb.pp("actnorms"));

        let wz0 = Conv2d::new(&vz.pp(0), c, h, g3, true, rng)?;
        let wzs = (1..l)
            .map(|k| PosConv2d::new(&vz.pp(k), h, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let wz_out = PosConv2d::new(&vz.pp(l), h, 1, g3, false, rng)?;
        let wxs = (0..l - 1)
            .map(|k| Conv2d::new(&vx.pp(k), c, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let wx_out = Conv2d::new(&vx.pp(l - 1), c, 1, g3, false, rng)?;
        let wx2s = (0..l - 1)
            .map(|k| Conv2d::new(&vx2.pp(k), c, hh, g3, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let mut actnorms = (0..l)
            .map(|k| ActNorm::new(&va.pp(k), hh))
            .collect::<Result<Vec<_>>>()?;
        // Allocated but unused by the reference (its output has no ActNorm).
        ActNorm::new(&va.pp(l), 1)?;
        actnorms.truncate(l - 1);

        let mut nodes = vec![input_node()];
        nodes.push(ConvNode {
            inputs: vec![ConvInput::plain(wz0, vec![0])],
            actnorm: None,
            act: Some(first),
            readout: false,
        });
        let mut state = vec![1];
        for ((wz, wx), (wx2, an)) in wzs.into_iter().zip(wxs).zip(wx2s.into_iter().zip(actnorms)) {
            nodes.push(ConvNode {
                inputs: vec![
                    ConvInput::positive(wz, state.clone()),
                    ConvInput::plain(wx, vec![0]),
                ],
                actnorm: Some(an),
                act: Some(act),
                readout: false,
            });
            nodes.push(ConvNode {
                inputs: vec![ConvInput::plain(wx2, vec![0])],
                actnorm: None,
                act: Some(aug),
                readout: false,
            });
            state = vec![nodes.len() - 2, nodes.len() - 1];
        }
        nodes.push(ConvNode {
            inputs: vec![
                ConvInput::positive(wz_out, state),
                ConvInput::plain(wx_out, vec![0]),
            ],
            actnorm: None,
            act: None,
            readout: true,
        });
        Ok(Self {
            net: ConvNetwork::new(&vb, config.image, nodes)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConvIcnn3Config {
        &self.config
    }
}

impl_conv_potential!(ConvIcnn3);
