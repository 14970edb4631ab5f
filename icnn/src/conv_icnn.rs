//! `ConvIcnn`: the reference's plain convolutional ICNN (`ConvICNN`, `train_img.py --icnn 1`,
//! the image default).

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::actnorm::ActNorm;
use crate::common::{check_conv_sizes, check_image};
use crate::conv_geometry::{ConvGeometry, ImageShape};
use crate::conv_layers::{Conv2d, PosConv2d};
use crate::conv_network::{ConvInput, ConvNetwork, ConvNode, impl_conv_potential};
use crate::error::Result;
use crate::parameter_count as pc;

/// Configuration of [`ConvIcnn`] (reference `ConvICNN(dim=C, dimh, num_hidden_layers,
/// num_pooling)`; `train_img.py` defaults: width 64, depth 3, no pooling).
///
/// ```
/// use icnn::{ConvIcnn, ConvIcnnConfig, ConvexPotential, ImageShape};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// // MNIST by default; a small image and one pooling stage here (4 → ⌊4/2⌋ + 2 = 4 pixels).
/// assert_eq!(ConvIcnnConfig::default().image, ImageShape::new(1, 28, 28));
/// let config = ConvIcnnConfig { image: ImageShape::new(1, 4, 4), width: 4, depth: 1, num_pooling: 1 };
/// let net = ConvIcnn::new(vb.pp("icnn"), &config, &mut rng)?;
/// assert_eq!((net.dim(), net.config()), (16, &config));
/// // Two 1×4×4 images, flattened to rows of 16.
/// let x = Tensor::arange(0.0f64, 32.0, &Device::Cpu)?.affine(0.1, -1.0)?.reshape((2, 16))?;
/// let (f, g) = net.value_and_gradient(&x)?;
/// assert_eq!((f.dims(), g.dims()), (&[2][..], &[2, 16][..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvIcnnConfig {
    /// Input image shape `(C, H, W)` (the reference's `dim` is `C`).
    pub image: ImageShape,
    /// Hidden channels `h` (`dimh`).
    pub width: usize,
    /// Layers per stage `L` (`num_hidden_layers`), at least 1.
    pub depth: usize,
    /// Extra stages `p` (`num_pooling`), each after a 2×2 stride-2 padding-2 convolution of
    /// both paths (spatial size `⌊H/2⌋ + 2`).
    pub num_pooling: usize,
}

impl Default for ConvIcnnConfig {
    fn default() -> Self {
        Self {
            image: ImageShape::default(),
            width: 64,
            depth: 3,
            num_pooling: 0,
        }
    }
}

impl ConvIcnnConfig {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::ConvIcnnConfig { image: icnn::ImageShape::new(1, 8, 8), width: 4, depth: 2, num_pooling: 1 };
    /// assert_eq!(config.parameter_count(), 1136);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (c, h, l, p) = (
            self.image.channels,
            self.width,
            self.depth,
            self.num_pooling,
        );
        let k = ConvGeometry::SAME_3X3.kernel;
        // A stage of `n` layers: `n` pairs of h→h convolutions and `L` ActNorms.
        let stage = |n: usize| {
            pc::sum([
                pc::mul(n, pc::mul(2, pc::conv(h, h, k, true))),
                pc::mul(l, pc::actnorm(h)),
            ])
        };
        pc::sum([
            pc::mul(2, pc::conv(c, h, k, true)),
            pc::actnorm(h),
            stage(l.saturating_sub(1)),
            pc::mul(
                p,
                pc::sum([pc::mul(2, pc::conv(h, h, POOLING.kernel, false)), stage(l)]),
            ),
        ])
    }

    /// Checks the configuration without building anything: image channels, `width` and
    /// `depth` at least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters, and an image
    /// of at least one pixel whose values in a layer (`(C + width)·H·W` per image) memory
    /// can address. [`ConvIcnn::new`] runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::{ConvIcnnConfig, ImageShape};
    /// assert!(ConvIcnnConfig::default().validate().is_ok());
    /// let err = ConvIcnnConfig { width: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: width must be at least 1");
    /// let empty = ConvIcnnConfig { image: ImageShape::new(1, 0, 28), ..Default::default() };
    /// assert!(empty.validate().unwrap_err().to_string().contains("empty image shape"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let (h, l) = (self.width, self.depth);
        let model = format!(
            "ConvIcnn (image {:?}, width {h}, depth {l}, num_pooling {})",
            self.image, self.num_pooling
        );
        check_conv_sizes(&model, self.image, h, l, self.parameter_count())?;
        check_image(self.image, self.width)
    }
}

/// The pooling convolution between stages: 2×2 kernel, stride 2, padding 2.
const POOLING: ConvGeometry = ConvGeometry {
    kernel: 2,
    stride: 2,
    padding: 2,
};

/// The reference's `ConvICNN` (every convolution 3×3, stride 1, padding 1, with bias):
/// ```text
/// z  = sp(AN_first(Conv_{C→h}(x)))            Wz0, actnorm_first
/// x' = Conv_{C→h}(x)                          Wx0 (x' replaces x on every skip path)
/// z  = sp(AN_k(PosConv_{h→h}(z) + Conv_{h→h}(x')))        k = 1..L−1 (stage 0)
/// [stage s ≥ 1: x' = Conv2×2(x'), z = PosConv2×2(z) (no bias), then L such layers]
/// F(x) = Σ_channels mean_{H,W}(z + x')
/// ```
/// `sp` is the plain softplus. Parameter names: `Wz0.{weight,bias}`, `Wx0.{weight,bias}`,
/// `steps.s.0.k.{weight,bias}` (positive), `steps.s.1.k.{weight,bias}`,
/// `steps.s.2.k.{b,logs}` (`L` per stage; the last of stage 0 is unused, as in the
/// reference), `pooling_layers_z.s.weight`, `pooling_layers_x.s.weight`,
/// `actnorm_first.{b,logs}`, plus `initialized`.
///
/// Input: `(B, C·H·W)` rows (flattened in `(C, H, W)` order) or `(B, C, H, W)` images; the
/// potential is `(B,)` and the gradient and Hessian-vector products are `(B, C·H·W)` rows,
/// so CG and Lanczos work on rows unchanged.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvIcnn, ConvIcnnConfig, ConvexPotential, ImageShape};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = ConvIcnnConfig { image: ImageShape::new(1, 4, 4), width: 4, depth: 2, num_pooling: 0 };
/// let net = ConvIcnn::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// assert_eq!(net.dim(), 16);
/// let x = Tensor::arange(0.0f64, 32.0, &Device::Cpu)?.affine(0.1, -1.0)?.reshape((2, 16))?;
/// let lin = net.linearize(&x)?;
/// assert_eq!(lin.potential().dims(), &[2]);
/// assert_eq!(lin.gradient().dims(), &[2, 16]);
/// let v = Tensor::ones((2, 16), DType::F64, &Device::Cpu)?;
/// // vᵀHv ≥ 0: the potential is convex.
/// let vhv = (lin.hvp(&v)? * &v)?.sum(1)?.to_vec1::<f64>()?;
/// assert!(vhv.iter().all(|&q| q >= -1e-12));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConvIcnn {
    pub(crate) net: ConvNetwork,
    config: ConvIcnnConfig,
}

/// The layers of one stage.
struct Stage {
    wzs: Vec<PosConv2d>,
    wxs: Vec<Conv2d>,
    actnorms: Vec<ActNorm>,
}

impl ConvIcnn {
    /// Creates (or loads) the parameters, drawing initial values from `rng` in the
    /// reference's construction order.
    pub fn new<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &ConvIcnnConfig,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        let (c, h, l) = (config.image.channels, config.width, config.depth);
        let g3 = ConvGeometry::SAME_3X3;
        let sp = Activation::new(ActivationKind::Softplus);
        let wz0 = Conv2d::new(&vb.pp("Wz0"), c, h, g3, true, rng)?;
        let wx0 = Conv2d::new(&vb.pp("Wx0"), c, h, g3, true, rng)?;
        let vs = vb.pp("steps");
        let stage = |s: usize, layers: usize, rng: &mut R| -> Result<Stage> {
            let v = vs.pp(s);
            let wzs = (0..layers)
                .map(|k| PosConv2d::new(&v.pp(0).pp(k), h, h, g3, true, rng))
                .collect::<Result<Vec<_>>>()?;
            let wxs = (0..layers)
                .map(|k| Conv2d::new(&v.pp(1).pp(k), h, h, g3, true, rng))
                .collect::<Result<Vec<_>>>()?;
            let actnorms = (0..l)
                .map(|k| ActNorm::new(&v.pp(2).pp(k), h))
                .collect::<Result<Vec<_>>>()?;
            Ok(Stage { wzs, wxs, actnorms })
        };
        let mut stages = vec![stage(0, l - 1, rng)?];
        let p = config.num_pooling;
        let pool_z = (0..p)
            .map(|s| PosConv2d::new(&vb.pp("pooling_layers_z").pp(s), h, h, POOLING, false, rng))
            .collect::<Result<Vec<_>>>()?;
        let pool_x = (0..p)
            .map(|s| Conv2d::new(&vb.pp("pooling_layers_x").pp(s), h, h, POOLING, false, rng))
            .collect::<Result<Vec<_>>>()?;
        for s in 1..=p {
            stages.push(stage(s, l, rng)?);
        }
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
        let (mut z, mut xp) = (1, 2);
        let mut pools = pool_z.into_iter().zip(pool_x);
        let n_stages = stages.len();
        for (s, st) in stages.into_iter().enumerate() {
            for ((wz, wx), an) in st.wzs.into_iter().zip(st.wxs).zip(st.actnorms) {
                nodes.push(ConvNode {
                    inputs: vec![
                        ConvInput::positive(wz, vec![z]),
                        ConvInput::plain(wx, vec![xp]),
                    ],
                    actnorm: Some(an),
                    act: Some(sp),
                    readout: false,
                });
                z = nodes.len() - 1;
            }
            if s + 1 != n_stages
                && let Some((pz, px)) = pools.next()
            {
                nodes.push(ConvNode {
                    inputs: vec![ConvInput::plain(px, vec![xp])],
                    actnorm: None,
                    act: None,
                    readout: false,
                });
                xp = nodes.len() - 1;
                nodes.push(ConvNode {
                    inputs: vec![ConvInput::positive(pz, vec![z])],
                    actnorm: None,
                    act: None,
                    readout: false,
                });
                z = nodes.len() - 1;
            }
        }
        nodes[z].readout = true;
        nodes[xp].readout = true;
        Ok(Self {
            net: ConvNetwork::new(&vb, config.image, nodes)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConvIcnnConfig {
        &self.config
    }
}

/// The input node (node 0) of a conv network.
pub(crate) fn input_node() -> ConvNode {
    ConvNode {
        inputs: Vec::new(),
        actnorm: None,
        act: None,
        readout: false,
    }
}

impl_conv_potential!(ConvIcnn);
