//! The DCGAN generator (PyTorch's DCGAN tutorial layout, as `gan-face-generate` trains it):
//! a 100-dimensional noise vector through five transposed convolutions (4x4 kernels), batch
//! norm and ReLU between them and tanh at the end, to a 64x64 RGB image.
//!
//! It takes no text. Basalt derives its noise from a seed; a prompt can only choose the
//! seed (see [`crate::seed_for`]).

use std::collections::HashMap;
use std::path::Path;

use crate::torch::{load_state_dict, Tensor};
use crate::ImageError;

/// Batch norm's epsilon in PyTorch.
const BN_EPS: f32 = 1e-5;

struct Deconv {
    /// `[in][ky][kx][out]`: reordered from PyTorch's `[in][out][ky][kx]` so the innermost
    /// loop runs over contiguous output channels.
    w: Vec<f32>,
    inputs: usize,
    outputs: usize,
    stride: usize,
    padding: usize,
}

struct BatchNorm {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

pub struct Dcgan {
    layers: Vec<(Deconv, Option<BatchNorm>)>,
    pub latent: usize,
}

fn tensor<'a>(t: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor, ImageError> {
    t.get(name)
        .ok_or_else(|| ImageError::Model(format!("checkpoint: missing `{name}`")))
}

impl Dcgan {
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let t = load_state_dict(path, "netG_state_dict")?;
        // (conv index, stride, padding, batch-norm index)
        let plan = [
            (0, 1, 0, Some(1)),
            (3, 2, 1, Some(4)),
            (6, 2, 1, Some(7)),
            (9, 2, 1, Some(10)),
            (12, 2, 1, None),
        ];
        let mut layers = Vec::new();
        let mut prev_out = None;
        for (conv, stride, padding, bn) in plan {
            let w = tensor(&t, &format!("main.{conv}.weight"))?;
            let [inputs, outputs, 4, 4] = w.shape[..] else {
                return Err(ImageError::Model(format!(
                    "main.{conv}.weight has shape {:?}, expected [in, out, 4, 4]",
                    w.shape
                )));
            };
            if prev_out.is_some_and(|p| p != inputs) {
                return Err(ImageError::Model("layer sizes do not chain".into()));
            }
            prev_out = Some(outputs);
            let mut reordered = vec![0f32; w.data.len()];
            for i in 0..inputs {
                for o in 0..outputs {
                    for k in 0..16 {
                        reordered[(i * 16 + k) * outputs + o] = w.data[(i * outputs + o) * 16 + k];
                    }
                }
            }
            let norm = match bn {
                None => None,
                Some(b) => {
                    let get = |what: &str| -> Result<&Vec<f32>, ImageError> {
                        let v = &tensor(&t, &format!("main.{b}.{what}"))?.data;
                        if v.len() != outputs {
                            return Err(ImageError::Model(format!("main.{b}.{what}: wrong size")));
                        }
                        Ok(v)
                    };
                    let (g, beta, mean, var) = (
                        get("weight")?,
                        get("bias")?,
                        get("running_mean")?,
                        get("running_var")?,
                    );
                    let scale: Vec<f32> = (0..outputs)
                        .map(|c| g[c] / (var[c] + BN_EPS).sqrt())
                        .collect();
                    let shift = (0..outputs).map(|c| beta[c] - mean[c] * scale[c]).collect();
                    Some(BatchNorm { scale, shift })
                }
            };
            layers.push((
                Deconv {
                    w: reordered,
                    inputs,
                    outputs,
                    stride,
                    padding,
                },
                norm,
            ));
        }
        if prev_out != Some(3) {
            return Err(ImageError::Model(
                "the generator must end with 3 channels".into(),
            ));
        }
        let latent = layers.first().map_or(0, |l| l.0.inputs);
        Ok(Self { layers, latent })
    }

    /// One image, `[3][64][64]` in [-1, 1], from a noise vector.
    pub fn generate(&self, z: &[f32]) -> Result<(usize, Vec<f32>), ImageError> {
        if z.len() != self.latent {
            return Err(ImageError::Model(format!(
                "noise must have {} values",
                self.latent
            )));
        }
        // Activations are kept height x width x channels.
        let mut x = z.to_vec();
        let mut size = 1;
        for (conv, norm) in &self.layers {
            let out_size = (size - 1) * conv.stride + 4 - 2 * conv.padding;
            let mut y = vec![0f32; out_size * out_size * conv.outputs];
            for iy in 0..size {
                for ix in 0..size {
                    let inp = &x[(iy * size + ix) * conv.inputs..][..conv.inputs];
                    for ky in 0..4 {
                        let oy = (iy * conv.stride + ky) as isize - conv.padding as isize;
                        if oy < 0 || oy >= out_size as isize {
                            continue;
                        }
                        for kx in 0..4 {
                            let ox = (ix * conv.stride + kx) as isize - conv.padding as isize;
                            if ox < 0 || ox >= out_size as isize {
                                continue;
                            }
                            let dst = &mut y
                                [(oy as usize * out_size + ox as usize) * conv.outputs..]
                                [..conv.outputs];
                            for (ci, &v) in inp.iter().enumerate() {
                                let w = &conv.w[(ci * 16 + ky * 4 + kx) * conv.outputs..]
                                    [..conv.outputs];
                                for (d, wv) in dst.iter_mut().zip(w) {
                                    *d += v * wv;
                                }
                            }
                        }
                    }
                }
            }
            match norm {
                Some(bn) => {
                    for px in y.chunks_exact_mut(conv.outputs) {
                        for (c, v) in px.iter_mut().enumerate() {
                            *v = (*v * bn.scale[c] + bn.shift[c]).max(0.0);
                        }
                    }
                }
                None => y.iter_mut().for_each(|v| *v = v.tanh()),
            }
            x = y;
            size = out_size;
        }
        // HWC -> CHW
        let mut chw = vec![0f32; x.len()];
        let pixels = size * size;
        for (p, px) in x.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * pixels + p] = px[c];
            }
        }
        Ok((size, chw))
    }
}
