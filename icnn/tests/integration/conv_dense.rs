//! The conv ICNNs equal the same networks evaluated densely through their unrolled
//! convolution matrices (f64; potential, gradient, Hessian-vector products and Hessians to
//! 1e-10). The dense side is independent of the crate's derivative code: each convolution is
//! a matrix built by an index loop (PyTorch cross-correlation, zero padding, stride; checked
//! against candle's convolution applied to basis images), the wiring is rebuilt here from
//! the reference's description and the parameter names, the gradient comes from forward-mode
//! Jacobians and the Hessian from `H = Σ_j J_{a_j}ᵀ diag(∂F/∂z_j ⊙ s''(a_j)) J_{a_j}`.

use crate::conv_common::{Arch, DEPTH, all_cases, assert_close, build, flat, param, randn};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ActivationKind, Conv2d, ConvGeometry, ImageShape, PosConv2d};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Matrix blocks per source, per-pixel bias, output shape of one convolution.
type ConvBlocks = (
    Vec<(usize, DMatrix<f64>)>,
    DVector<f64>,
    (usize, usize, usize),
);

/// `(kernel, stride, padding)`.
type Geom = (usize, usize, usize);
const G3: Geom = (3, 1, 1);
const POOL: Geom = (2, 2, 2);

/// An activation `(kind, zero shift, symmetric)`: value, first and second derivative.
#[derive(Clone, Copy)]
struct Act(ActivationKind, bool, bool);

impl Act {
    fn eval(self, t: f64) -> [f64; 3] {
        let Act(kind, shift, symm) = self;
        let [mut v, mut d1, d2, s0] = match kind {
            ActivationKind::Softplus => {
                let sig = 1.0 / (1.0 + (-t).exp());
                let v = t.max(0.0) + (-t.abs()).exp().ln_1p();
                [v, sig, sig * (1.0 - sig), std::f64::consts::LN_2]
            }
            _ => {
                let cdf = 0.5 * statrs::function::erf::erfc(-t / std::f64::consts::SQRT_2);
                let pdf = (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
                [
                    t * cdf + pdf,
                    cdf,
                    pdf,
                    1.0 / (2.0 * std::f64::consts::PI).sqrt(),
                ]
            }
        };
        if shift {
            v -= s0;
        }
        if symm {
            v -= 0.5 * t;
            d1 -= 0.5;
        }
        [v, d1, d2]
    }
}

const SP: Act = Act(ActivationKind::Softplus, false, false);
const SYMM_SP: Act = Act(ActivationKind::Softplus, false, true);

/// The matrix of the convolution with `kernel` `(o, c, k, k)` (row-major values) on a
/// `c×h×w` input, by an index loop: `y[o,i,j] = Σ K[o,c,a,b] x[c, i·s+a−p, j·s+b−p]`.
fn conv_matrix(
    kernel: &[f64],
    dims: &[usize],
    g: Geom,
    hw: (usize, usize),
) -> (DMatrix<f64>, (usize, usize, usize)) {
    let (o, c, k) = (dims[0], dims[1], dims[2]);
    let (ks, s, p) = g;
    assert_eq!(k, ks);
    let (h, w) = hw;
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut m = DMatrix::zeros(o * ho * wo, c * h * w);
    for oc in 0..o {
        for i in 0..ho {
            for j in 0..wo {
                for ic in 0..c {
                    for a in 0..k {
                        for b in 0..k {
                            let y = (i * s + a) as isize - p as isize;
                            let x = (j * s + b) as isize - p as isize;
                            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                continue;
                            }
                            let (y, x) = (y as usize, x as usize);
                            m[(oc * ho * wo + i * wo + j, ic * h * w + y * w + x)] +=
                                kernel[((oc * c + ic) * k + a) * k + b];
                        }
                    }
                }
            }
        }
    }
    (m, (o, ho, wo))
}

fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// A per-channel vector expanded to every pixel.
fn per_pixel(v: &[f64], pixels: usize) -> DVector<f64> {
    DVector::from_iterator(
        v.len() * pixels,
        v.iter().flat_map(|&x| std::iter::repeat_n(x, pixels)),
    )
}

struct DNode {
    inputs: Vec<(usize, DMatrix<f64>)>,
    bias: DVector<f64>,
    /// Per-pixel `(γ, β)`.
    actnorm: Option<(DVector<f64>, DVector<f64>)>,
    act: Option<Act>,
    readout: bool,
    shape: (usize, usize, usize),
}

struct DenseNet<'a> {
    varmap: &'a VarMap,
    nodes: Vec<DNode>,
}

impl<'a> DenseNet<'a> {
    fn new(varmap: &'a VarMap, image: ImageShape) -> Self {
        let input = DNode {
            inputs: vec![],
            bias: DVector::zeros(image.dim()),
            actnorm: None,
            act: None,
            readout: false,
            shape: (image.channels, image.height, image.width),
        };
        Self {
            varmap,
            nodes: vec![input],
        }
    }

    /// The convolution `name` over the channel concatenation of `sources`: one matrix block
    /// per source, the per-pixel bias, the output shape.
    fn conv(
        &self,
        name: &str,
        positive: bool,
        bias: bool,
        g: Geom,
        sources: &[usize],
    ) -> ConvBlocks {
        let (w, dims) = param(self.varmap, &format!("icnn.{name}.weight"));
        let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
        let kernel: Vec<f64> = if positive {
            w.iter().map(|&v| softplus(v) / fan_in).collect()
        } else {
            w
        };
        let (_, h, wd) = self.nodes[sources[0]].shape;
        let c: usize = sources.iter().map(|&s| self.nodes[s].shape.0).sum();
        let mut dims_full = dims.clone();
        dims_full[1] = c;
        let (m, out) = conv_matrix(&kernel, &dims_full, g, (h, wd));
        let mut blocks = Vec::new();
        let mut off = 0;
        for &s in sources {
            let n = self.nodes[s].shape.0 * h * wd;
            blocks.push((s, m.columns(off, n).into_owned()));
            off += n;
        }
        let key = format!("icnn.{name}.bias");
        let has_bias = self.varmap.data().lock().unwrap().contains_key(&key);
        assert_eq!(has_bias, bias, "{key}");
        let b = if bias {
            let (b, _) = param(self.varmap, &key);
            let b: Vec<f64> = b
                .iter()
                .map(|v| if positive { v / fan_in } else { *v })
                .collect();
            per_pixel(&b, out.1 * out.2)
        } else {
            DVector::zeros(out.0 * out.1 * out.2)
        };
        (blocks, b, out)
    }

    /// Adds a node summing the convolutions `convs` (name, positive, bias, geometry, sources).
    fn add(
        &mut self,
        convs: &[(&str, bool, bool, Geom, Vec<usize>)],
        actnorm: Option<&str>,
        act: Option<Act>,
    ) -> usize {
        let mut inputs = Vec::new();
        let mut bias: Option<DVector<f64>> = None;
        let mut shape = (0, 0, 0);
        for (name, pos, b, g, src) in convs {
            let (blocks, bb, out) = self.conv(name, *pos, *b, *g, src);
            inputs.extend(blocks);
            bias = Some(match bias {
                Some(x) => x + bb,
                None => bb,
            });
            shape = out;
        }
        let actnorm = actnorm.map(|a| {
            let (b, _) = param(self.varmap, &format!("icnn.{a}.b"));
            let (logs, _) = param(self.varmap, &format!("icnn.{a}.logs"));
            let gamma: Vec<f64> = logs.iter().map(|l| l.exp() + 0.001).collect();
            (
                per_pixel(&gamma, shape.1 * shape.2),
                per_pixel(&b, shape.1 * shape.2),
            )
        });
        self.nodes.push(DNode {
            inputs,
            bias: bias.unwrap(),
            actnorm,
            act,
            readout: false,
            shape,
        });
        self.nodes.len() - 1
    }

    /// Pre-activations `p_j` (before the ActNorm) of every node at one sample.
    fn pre_activations(&self, x: &DVector<f64>) -> Vec<DVector<f64>> {
        self.forward(x).0
    }

    /// `(p_j, a_j, z_j, J_{a_j}, J_{z_j})` per node at one sample.
    #[allow(clippy::type_complexity)]
    fn forward(
        &self,
        x: &DVector<f64>,
    ) -> (
        Vec<DVector<f64>>,
        Vec<DVector<f64>>,
        Vec<DVector<f64>>,
        Vec<DMatrix<f64>>,
        Vec<DMatrix<f64>>,
    ) {
        let d = x.len();
        let (mut ps, mut as_, mut zs, mut jas, mut jzs) = (
            vec![x.clone()],
            vec![x.clone()],
            vec![x.clone()],
            vec![DMatrix::identity(d, d)],
            vec![DMatrix::identity(d, d)],
        );
        for node in &self.nodes[1..] {
            let mut p = node.bias.clone();
            let mut jp = DMatrix::zeros(p.len(), d);
            for (s, m) in &node.inputs {
                p += m * &zs[*s];
                jp += m * &jzs[*s];
            }
            let (a, ja) = match &node.actnorm {
                Some((g, b)) => (g.component_mul(&(&p + b)), DMatrix::from_diagonal(g) * &jp),
                None => (p.clone(), jp),
            };
            let (z, jz) = match node.act {
                Some(act) => {
                    let s1 = a.map(|t| act.eval(t)[1]);
                    (a.map(|t| act.eval(t)[0]), DMatrix::from_diagonal(&s1) * &ja)
                }
                None => (a.clone(), ja.clone()),
            };
            ps.push(p);
            as_.push(a);
            zs.push(z);
            jas.push(ja);
            jzs.push(jz);
        }
        (ps, as_, zs, jas, jzs)
    }

    /// `(F, ∇F, ∇²F)` at one sample.
    fn eval(&self, x: &DVector<f64>) -> (f64, DVector<f64>, DMatrix<f64>) {
        let d = x.len();
        let (_, as_, zs, jas, jzs) = self.forward(x);
        let n = self.nodes.len();
        let (mut f, mut grad) = (0.0, DVector::zeros(d));
        let mut g: Vec<DVector<f64>> = self
            .nodes
            .iter()
            .map(|nd| DVector::zeros(nd.bias.len()))
            .collect();
        for (j, node) in self.nodes.iter().enumerate() {
            if node.readout {
                let r = 1.0 / (node.shape.1 * node.shape.2) as f64;
                f += r * zs[j].sum();
                grad += jzs[j].transpose() * DVector::from_element(zs[j].len(), r);
                g[j].add_scalar_mut(r);
            }
        }
        let mut hess = DMatrix::zeros(d, d);
        for j in (1..n).rev() {
            let node = &self.nodes[j];
            let [s1, s2]: [DVector<f64>; 2] = match node.act {
                Some(act) => [
                    as_[j].map(|t| act.eval(t)[1]),
                    as_[j].map(|t| act.eval(t)[2]),
                ],
                None => [
                    DVector::from_element(as_[j].len(), 1.0),
                    DVector::zeros(as_[j].len()),
                ],
            };
            let w = g[j].component_mul(&s2);
            hess += jas[j].transpose() * DMatrix::from_diagonal(&w) * &jas[j];
            let mut dp = g[j].component_mul(&s1);
            if let Some((gamma, _)) = &node.actnorm {
                dp = dp.component_mul(gamma);
            }
            for (s, m) in &node.inputs {
                g[*s] += m.transpose() * &dp;
            }
        }
        (f, grad, hess)
    }
}

/// The dense network of a test case, wired from the reference's description.
fn dense_net(varmap: &VarMap, arch: Arch, image: ImageShape) -> DenseNet<'_> {
    let mut n = DenseNet::new(varmap, image);
    let l = DEPTH;
    match arch {
        Arch::Icnn { pooling } => {
            let mut z = n.add(
                &[("Wz0", false, true, G3, vec![0])],
                Some("actnorm_first"),
                Some(SP),
            );
            let mut xp = n.add(&[("Wx0", false, true, G3, vec![0])], None, None);
            for s in 0..=pooling {
                for k in 0..(if s == 0 { l - 1 } else { l }) {
                    let (wz, wx) = (format!("steps.{s}.0.{k}"), format!("steps.{s}.1.{k}"));
                    let an = format!("steps.{s}.2.{k}");
                    z = n.add(
                        &[
                            (&wz, true, true, G3, vec![z]),
                            (&wx, false, true, G3, vec![xp]),
                        ],
                        Some(&an),
                        Some(SP),
                    );
                }
                if s < pooling {
                    xp = n.add(
                        &[(
                            &format!("pooling_layers_x.{s}"),
                            false,
                            false,
                            POOL,
                            vec![xp],
                        )],
                        None,
                        None,
                    );
                    z = n.add(
                        &[(&format!("pooling_layers_z.{s}"), true, false, POOL, vec![z])],
                        None,
                        None,
                    );
                }
            }
            n.nodes[z].readout = true;
            n.nodes[xp].readout = true;
        }
        Arch::Icnn2 => {
            let z = n.add(
                &[("Wz0", false, true, G3, vec![0])],
                Some("actnorm_first"),
                Some(SP),
            );
            let xp = n.add(&[("Wx0", false, true, G3, vec![0])], None, None);
            let mut state = vec![z];
            for k in 0..l - 1 {
                let (wz, wx, wx2, an) = (
                    format!("step.0.{k}"),
                    format!("step.1.{k}"),
                    format!("step.2.{k}"),
                    format!("step.3.{k}"),
                );
                let zh = n.add(
                    &[
                        (&wz, true, true, G3, state.clone()),
                        (&wx, false, true, G3, vec![xp]),
                    ],
                    Some(&an),
                    Some(SP),
                );
                let g = n.add(&[(&wx2, false, true, G3, vec![xp])], None, Some(SYMM_SP));
                state = vec![zh, g];
            }
            for s in state {
                n.nodes[s].readout = true;
            }
        }
        Arch::Icnn3 { kind } => {
            let a = Act(kind, true, false);
            let z = n.add(
                &[("Wzs.0", false, true, G3, vec![0])],
                None,
                Some(Act(kind, true, true)),
            );
            let mut state = vec![z];
            for k in 1..l {
                let (wz, wx, wx2, an) = (
                    format!("Wzs.{k}"),
                    format!("Wxs.{}", k - 1),
                    format!("Wx2s.{}", k - 1),
                    format!("actnorms.{}", k - 1),
                );
                let zh = n.add(
                    &[
                        (&wz, true, true, G3, state.clone()),
                        (&wx, false, true, G3, vec![0]),
                    ],
                    Some(&an),
                    Some(a),
                );
                let g = n.add(&[(&wx2, false, true, G3, vec![0])], None, Some(SYMM_SP));
                state = vec![zh, g];
            }
            let (wz, wx) = (format!("Wzs.{l}"), format!("Wxs.{}", l - 1));
            let out = n.add(
                &[
                    (&wz, true, false, G3, state),
                    (&wx, false, false, G3, vec![0]),
                ],
                None,
                None,
            );
            n.nodes[out].readout = true;
        }
    }
    n
}

fn row(t: &Tensor, b: usize) -> DVector<f64> {
    DVector::from_vec(flat(&t.get(b).unwrap()))
}

#[test]
fn conv_icnns_equal_their_dense_unrolling() {
    let images = [
        ImageShape::new(1, 4, 4),
        ImageShape::new(3, 4, 4),
        ImageShape::new(2, 4, 5),
    ];
    let mut rng = StdRng::seed_from_u64(30);
    for case in all_cases(&images, 5) {
        let dense = dense_net(&case.varmap, case.arch, case.image);
        let d = case.image.dim();
        let x = randn(&mut rng, (2, d), 1.0);
        let v = randn(&mut rng, (2, d), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let (pot, grad) = (flat(&lin.potential()), lin.gradient());
        let (hv, hess) = (lin.hvp(&v).unwrap(), lin.hessian().unwrap());
        for (b, &pot_b) in pot.iter().enumerate() {
            let (f, g, h) = dense.eval(&row(&x, b));
            // Same arithmetic up to summation order: rounding ≈ 1e-15 relative; 1e-10 is the
            // issue's bound (a wrong tap, channel block or adjoint is off by O(|value|)).
            let what = |s: &str| format!("{} sample {b}: {s}", case.name);
            assert_close(&[pot_b], &[f], 1e-10, &what("F"));
            assert_close(row(&grad, b).as_slice(), g.as_slice(), 1e-10, &what("∇F"));
            let hv_dense = &h * row(&v, b);
            assert_close(
                row(&hv, b).as_slice(),
                hv_dense.as_slice(),
                1e-10,
                &what("Hv"),
            );
            let h_ours = DMatrix::from_row_slice(d, d, &flat(&hess.get(b).unwrap()));
            assert_close(h_ours.as_slice(), h.as_slice(), 1e-10, &what("H"));
        }
    }
}

#[test]
fn loop_matrices_match_candle_convolutions_on_basis_images() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(31);
    let pos = PosConv2d::new(&vb.pp("p"), 2, 3, ConvGeometry::SAME_3X3, true, &mut rng).unwrap();
    let pool = ConvGeometry {
        kernel: 2,
        stride: 2,
        padding: 2,
    };
    let plain = Conv2d::new(&vb.pp("c"), 2, 3, pool, true, &mut rng).unwrap();
    let (c, h, w) = (2, 4, 5);
    let d = c * h * w;
    let basis = Tensor::eye(d, DType::F64, &Device::Cpu)
        .unwrap()
        .reshape((d, c, h, w))
        .unwrap();
    let zero = Tensor::zeros((1, c, h, w), DType::F64, &Device::Cpu).unwrap();
    let columns = |y: Tensor, y0: Tensor| -> DMatrix<f64> {
        let y = y.broadcast_sub(&y0).unwrap().flatten_from(1).unwrap();
        let n = y.dim(1).unwrap();
        DMatrix::from_row_slice(d, n, &flat(&y)).transpose()
    };
    let m_pos = columns(pos.forward(&basis).unwrap(), pos.forward(&zero).unwrap());
    let m_plain = columns(
        plain.forward(&basis).unwrap(),
        plain.forward(&zero).unwrap(),
    );
    let (wp, dp) = param(&varmap, "p.weight");
    let kp: Vec<f64> = wp.iter().map(|&v| softplus(v) / 18.0).collect();
    let (wc, dc) = param(&varmap, "c.weight");
    let (lp, _) = conv_matrix(&kp, &dp, G3, (h, w));
    let (lc, out) = conv_matrix(&wc, &dc, POOL, (h, w));
    assert_eq!(out, (3, 4, 4)); // ⌊(4 + 4 − 2)/2⌋ + 1 = 4, ⌊(5 + 4 − 2)/2⌋ + 1 = 4
    assert!((&m_pos - &lp).amax() < 1e-14);
    assert!((&m_plain - &lc).amax() < 1e-14);
    // PosConv2d's bias is divided by fan_in too.
    let (bp, _) = param(&varmap, "p.bias");
    let y0 = flat(&pos.forward(&zero).unwrap());
    assert!((y0[0] - bp[0] / 18.0).abs() < 1e-15);
}

#[test]
fn actnorms_initialise_per_channel_over_batch_and_pixels() {
    let image = ImageShape::new(3, 4, 4);
    let mut rng = StdRng::seed_from_u64(32);
    for arch in [
        Arch::Icnn { pooling: 1 },
        Arch::Icnn2,
        Arch::Icnn3 {
            kind: ActivationKind::Softplus,
        },
    ] {
        let (varmap, net) = build(arch, image, DType::F64, 7);
        let x0 = randn(&mut rng, (6, image.dim()), 1.5);
        net.potential(&x0).unwrap();
        let dense = dense_net(&varmap, arch, image);
        let pres: Vec<Vec<DVector<f64>>> = (0..6)
            .map(|b| dense.pre_activations(&row(&x0, b)))
            .collect();
        let mut checked = 0;
        for (j, node) in dense.nodes.iter().enumerate() {
            let Some((gamma, beta)) = &node.actnorm else {
                continue;
            };
            let (c, h, w) = node.shape;
            let hw = h * w;
            for ch in 0..c {
                let vals: Vec<f64> = pres
                    .iter()
                    .flat_map(|p| p[j].rows(ch * hw, hw).iter().copied().collect::<Vec<_>>())
                    .collect();
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / vals.len() as f64)
                    .sqrt();
                // b = −mean, logs = −ln(std + 1e-6) (biased std over batch × pixels), each
                // layer from the statistics of the already-normalised earlier layers.
                assert!(
                    (beta[ch * hw] + mean).abs() < 1e-12,
                    "{arch:?} node {j} channel {ch} shift"
                );
                let want = (-(std + 1e-6).ln()).exp() + 0.001;
                assert!(
                    (gamma[ch * hw] - want).abs() < 1e-12 * want,
                    "{arch:?} node {j} channel {ch} scale"
                );
            }
            checked += 1;
        }
        assert!(checked >= 2, "{arch:?}: {checked} ActNorms checked");
    }
}
