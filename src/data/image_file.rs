//! Decoding one user image (png, jpeg, bmp, webp) with hard limits: the declared size
//! is checked against a pixel cap before anything is allocated, so a decompression bomb
//! (a small file declaring 100000×100000 pixels) is refused, not decoded.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::{Error, Result};

/// 64 megapixels: far beyond any photo a vision model is trained on.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

fn err(origin: &Path, msg: String) -> Error {
    Error::File { path: origin.into(), msg }
}

/// Decode `bytes` (the content of `origin`) to 8-bit RGB, refusing images of more than
/// `max_pixels` pixels.
pub fn decode_rgb(bytes: &[u8], origin: &Path, max_pixels: u64) -> Result<RgbImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(origin, format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(err(origin, "not an image (png, jpeg, bmp or webp)".into()));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| err(origin, format!("not a decodable image: {e}")))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(err(
            origin,
            format!("declares {w}×{h} = {pixels} pixels, over the cap of {max_pixels}: refused unread"),
        ));
    }
    // The cap also bounds what the decoder may allocate (RGBA16 at worst, plus slack).
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| err(origin, format!("over the decoding limits: {e}")))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| err(origin, format!("corrupt image data: {e}")))?;
    Ok(image.to_rgb8())
}

/// [`decode_rgb`] on a file.
pub fn load_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes, path, max_pixels)
}
