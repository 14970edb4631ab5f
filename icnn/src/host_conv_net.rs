//! A prepared convolutional network (`conv_network`) as a host network (`surrogate_host`)
//! whose links are convolutions (`host_link`), so the CG-surrogate step of the conv ICNNs
//! runs on the same host kernels as the dense ones.
//!
//! Node `j ≥ 1` of the conv network becomes group `j − 1`: a kernel block reading node 0 (the
//! input image) is the group's `A`, a block reading node `s ≥ 1` an input from group `s − 1`.
//! The host network's maps are channel-last `(H, W, C)` rows (the links' order, see
//! `host_link`; inputs and outputs are converted from and to the flows' channel-first rows at
//! the boundary of `surrogate_host`): the per-channel bias repeats over the pixels, and a
//! readout node's `mean_{H,W} Σ_c z` is the readout `1/(H·W)` on the flattened map.

use candle_core::Tensor;

use crate::conv_network::PreparedNode;
use crate::error::Result;
use crate::gemm_conv::PatchGeometry;
use crate::host_link::{ChannelLast, Link};
use crate::host_weights::host_vec;
use crate::surrogate_host::{HostGroup, HostNet, Real};

/// The host network of `nodes` and the tensors behind its packed parameters, in the packed
/// order of `HostNet::offsets` (per group: input kernels, the input-image kernel, the bias),
/// or `None` where the host kernels do not cover the network (a node reading one source
/// twice, a geometry that does not reproduce the node's shape).
pub(crate) fn conv_host_net<T: Real>(
    nodes: &[PreparedNode],
) -> Result<Option<(HostNet<T>, Vec<Tensor>)>> {
    let Some(input) = nodes.first() else {
        return Ok(None);
    };
    let (c0, h0, w0) = input.shape;
    let mut groups = Vec::with_capacity(nodes.len().saturating_sub(1));
    let mut parts = Vec::new();
    for node in nodes.iter().skip(1) {
        let (c, h, w) = node.shape;
        let width = c * h * w;
        let mut inputs: Vec<(usize, Link<T>, Tensor)> = Vec::new();
        let mut lin: Option<(Link<T>, Tensor)> = None;
        for block in &node.blocks {
            let (c_out, c_in, kh, kw) = block.conv.kernel.dims4()?;
            let (cs, hs, ws) = nodes[block.source].shape;
            let g = block.conv.geometry;
            let Some(geometry) =
                PatchGeometry::for_conv(cs, (hs, ws), (kh, kw), g.stride, g.padding)
            else {
                return Ok(None);
            };
            if c_in != cs || c_out != c || (geometry.out_h, geometry.out_w) != (h, w) {
                return Ok(None);
            }
            let link = Link::conv(host_vec::<T>(&block.conv.kernel)?, geometry, c_out);
            let kernel = block.conv.kernel.flatten_all()?;
            if block.source == 0 {
                if lin.is_some() {
                    return Ok(None);
                }
                lin = Some((link, kernel));
            } else {
                if inputs.iter().any(|(s, _, _)| *s == block.source - 1) {
                    return Ok(None);
                }
                inputs.push((block.source - 1, link, kernel));
            }
        }
        let bias = match &node.bias {
            Some(b) => {
                let per_channel = host_vec::<T>(b)?;
                if per_channel.len() != c {
                    return Ok(None);
                }
                parts_push(&mut parts, &inputs, &lin, Some(b.flatten_all()?));
                Some(per_channel)
            }
            None => {
                parts_push(&mut parts, &inputs, &lin, None);
                None
            }
        };
        groups.push(HostGroup {
            inputs: inputs.into_iter().map(|(s, l, _)| (s, l)).collect(),
            lin: lin.map(|(l, _)| l),
            bias,
            act: node.act.map(|a| a.spec()),
            readout: node.readout.map(T::from_f64),
            width,
        });
    }
    Ok(Some((
        HostNet {
            groups,
            dim: c0 * h0 * w0,
            // One channel: both orders coincide.
            channel_last: (c0 > 1).then_some(ChannelLast {
                channels: c0,
                pixels: h0 * w0,
            }),
        },
        parts,
    )))
}

/// Appends one group's parameter tensors in the packed order.
fn parts_push<T>(
    parts: &mut Vec<Tensor>,
    inputs: &[(usize, Link<T>, Tensor)],
    lin: &Option<(Link<T>, Tensor)>,
    bias: Option<Tensor>,
) {
    parts.extend(inputs.iter().map(|(_, _, k)| k.clone()));
    parts.extend(lin.iter().map(|(_, k)| k.clone()));
    parts.extend(bias);
}
