//! Lanczos-3 resampling of planar float images, separable (rows, then columns), as image
//! editors upscale photographs: sharper than bilinear, without its blocky steps.

use std::f32::consts::PI;

fn sinc(x: f32) -> f32 {
    if x.abs() < 1e-6 {
        1.0
    } else {
        let px = PI * x;
        px.sin() / px
    }
}

fn lanczos3(x: f32) -> f32 {
    if x.abs() < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// For each output index: the first input index and the normalised weights.
fn weights(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f32 / dst as f32;
    // Downscaling widens the kernel so every input pixel contributes.
    let support = 3.0 * scale.max(1.0);
    (0..dst)
        .map(|o| {
            let center = (o as f32 + 0.5) * scale - 0.5;
            let lo = (center - support).floor().max(0.0) as usize;
            let hi = ((center + support).ceil() as usize).min(src - 1);
            let mut w: Vec<f32> = (lo..=hi)
                .map(|i| lanczos3((i as f32 - center) / scale.max(1.0)))
                .collect();
            let sum: f32 = w.iter().sum();
            if sum.abs() > 1e-6 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w)
        })
        .collect()
}

/// Resamples one `src` x `src` plane to `width` x `height`.
pub fn resize_plane(plane: &[f32], src: usize, width: usize, height: usize) -> Vec<f32> {
    let wx = weights(src, width);
    let wy = weights(src, height);
    let mut rows = vec![0f32; src * width];
    for y in 0..src {
        for (x, (lo, w)) in wx.iter().enumerate() {
            rows[y * width + x] = w
                .iter()
                .enumerate()
                .map(|(k, wv)| plane[y * src + lo + k] * wv)
                .sum();
        }
    }
    let mut out = vec![0f32; width * height];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..width {
            out[y * width + x] = w
                .iter()
                .enumerate()
                .map(|(k, wv)| rows[(lo + k) * width + x] * wv)
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant_and_sizes_are_right() {
        let plane = vec![0.25f32; 64 * 64];
        let up = resize_plane(&plane, 64, 256, 128);
        assert_eq!(up.len(), 256 * 128);
        assert!(up.iter().all(|v| (v - 0.25).abs() < 1e-5));
        let same = resize_plane(&(0..16).map(|i| i as f32).collect::<Vec<_>>(), 4, 4, 4);
        assert!((same[5] - 5.0).abs() < 1e-4);
    }
}
