//! JPEG 2000 decoding (SAFE band and mask files) on OpenJPEG through `jpeg2k`.
//!
//! Invariants:
//! - the image size is read from the codestream's SIZ marker by a small bounds-checked
//!   parser of our own *before* OpenJPEG sees the bytes, and anything over
//!   [`MAX_SIDE`] per side is refused with [`GranuleError::TooLarge`]: a hostile header
//!   cannot make the decoder allocate (OpenJPEG allocates `4 × width × height` bytes per
//!   component). The same check also keeps `jpeg2k`'s `u32` `w * h` from overflowing;
//! - OpenJPEG runs in strict mode (`jpeg2k` feature `strict-mode`): a truncated
//!   codestream is an error, not a silently half-decoded band;
//! - a band file must be single-component; multi-component files are refused by
//!   [`decode_u16`] and only read, component by component, through
//!   [`decode_components`] (the L1C `MSK_CLASSI` mask is one, see `safe.rs`);
//! - samples must be unsigned with at most 16 bits. Narrower components (the uint8
//!   masks) are *widened* to `u16` without rescaling, so a mask value 3 stays 3;
//! - every failure is a [`GranuleError`] naming the file; nothing here panics.

use std::path::Path;

use jpeg2k::{DecodeParameters, DumpImage};

use super::{GranuleError, MAX_SIDE};
use crate::raster::Raster;

/// The JP2 file signature box (ISO/IEC 15444-1 I.5.1).
const JP2_SIGNATURE: [u8; 12] = [
    0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a,
];
/// Start-of-codestream marker.
const SOC: [u8; 2] = [0xff, 0x4f];
/// Image-and-tile-size marker; it must follow SOC immediately.
const SIZ: [u8; 2] = [0xff, 0x51];

/// One component as the SIZ marker describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Bits per sample (1–38).
    pub precision: u8,
    /// Whether samples are signed.
    pub signed: bool,
    /// Horizontal subsampling factor.
    pub dx: u8,
    /// Vertical subsampling factor.
    pub dy: u8,
}

/// Image size and components, read from the SIZ marker without decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Image width in pixels (`Xsiz − XOsiz`).
    pub width: u64,
    /// Image height in pixels (`Ysiz − YOsiz`).
    pub height: u64,
    /// The components, in codestream order.
    pub components: Vec<ComponentInfo>,
}

fn err(path: &Path, reason: impl Into<String>) -> GranuleError {
    GranuleError::Jp2 {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The codestream inside a JP2 file (the content of its `jp2c` box), or the bytes
/// themselves when they are a raw J2K codestream.
fn codestream<'b>(bytes: &'b [u8], path: &Path) -> Result<&'b [u8], GranuleError> {
    if bytes.starts_with(&SOC) {
        return Ok(bytes);
    }
    if !bytes.starts_with(&JP2_SIGNATURE) {
        return Err(err(
            path,
            "not JPEG 2000 (neither a JP2 signature box nor a codestream SOC marker)",
        ));
    }
    let total = bytes.len() as u64;
    let mut off: u64 = 0;
    while off < total {
        let at = off as usize;
        let short = || err(path, format!("truncated box header at byte {off}"));
        let lbox = be_u32(bytes, at).ok_or_else(short)?;
        let tbox = bytes.get(at + 4..at + 8).ok_or_else(short)?;
        let (header, len) = match lbox {
            0 => (8, total - off),
            1 => (16, be_u64(bytes, at + 8).ok_or_else(short)?),
            n => (8, u64::from(n)),
        };
        if len < header {
            return Err(err(path, format!("box at byte {off} has length {len}")));
        }
        let end = off
            .checked_add(len)
            .filter(|e| *e <= total)
            .ok_or_else(|| {
                err(
                    path,
                    format!(
                    "truncated: box {:?} at byte {off} declares {len} bytes but the file has {}",
                    String::from_utf8_lossy(tbox),
                    total - off
                ),
                )
            })?;
        if tbox == b"jp2c" {
            return Ok(&bytes[(off + header) as usize..end as usize]);
        }
        off = end;
    }
    Err(err(path, "no codestream (jp2c) box"))
}

/// Reads the image size and components from the SIZ marker, decoding nothing.
///
/// # Errors
/// [`GranuleError::Jp2`] naming `path` when the bytes are not JPEG 2000, are truncated
/// before the end of the SIZ marker, or describe an empty image.
pub fn read_header(bytes: &[u8], path: &Path) -> Result<Header, GranuleError> {
    let cs = codestream(bytes, path)?;
    if cs.get(2..4) != Some(&SIZ[..]) {
        return Err(err(
            path,
            "codestream does not start with SOC followed by SIZ",
        ));
    }
    let short = || err(path, "truncated SIZ marker");
    let lsiz = usize::from(be_u16(cs, 4).ok_or_else(short)?);
    let x = be_u32(cs, 8).ok_or_else(short)?;
    let y = be_u32(cs, 12).ok_or_else(short)?;
    let xo = be_u32(cs, 16).ok_or_else(short)?;
    let yo = be_u32(cs, 20).ok_or_else(short)?;
    let csiz = usize::from(be_u16(cs, 40).ok_or_else(short)?);
    if csiz == 0 || lsiz != 38 + 3 * csiz {
        return Err(err(
            path,
            format!("SIZ marker is inconsistent (length {lsiz}, {csiz} components)"),
        ));
    }
    let comps = cs.get(42..42 + 3 * csiz).ok_or_else(short)?;
    let components = comps
        .chunks_exact(3)
        .map(|c| ComponentInfo {
            precision: (c[0] & 0x7f) + 1,
            signed: c[0] & 0x80 != 0,
            dx: c[1],
            dy: c[2],
        })
        .collect();
    let (Some(width), Some(height)) = (x.checked_sub(xo), y.checked_sub(yo)) else {
        return Err(err(path, "SIZ image offset lies beyond the image size"));
    };
    if width == 0 || height == 0 {
        return Err(err(path, format!("empty image ({width}x{height})")));
    }
    Ok(Header {
        width: u64::from(width),
        height: u64::from(height),
        components,
    })
}

/// Checks what every file we decode must satisfy: the size limit and unsigned,
/// unsubsampled components of at most 16 bits.
fn check(header: &Header, path: &Path) -> Result<(), GranuleError> {
    if header.width > MAX_SIDE || header.height > MAX_SIDE {
        return Err(GranuleError::TooLarge {
            path: path.to_path_buf(),
            width: header.width,
            height: header.height,
            limit: MAX_SIDE,
        });
    }
    for (i, c) in header.components.iter().enumerate() {
        if c.signed || c.precision > 16 {
            return Err(err(
                path,
                format!(
                    "component {i} is {}{}-bit; only unsigned samples of up to 16 bits are read",
                    if c.signed { "signed " } else { "" },
                    c.precision
                ),
            ));
        }
        if c.dx != 1 || c.dy != 1 {
            return Err(err(
                path,
                format!("component {i} is subsampled {}x{}", c.dx, c.dy),
            ));
        }
    }
    Ok(())
}

/// Decodes a single-component JPEG 2000 file (JP2 or raw codestream) to `u16`.
///
/// Components narrower than 16 bits (uint8 masks) are widened without rescaling.
///
/// # Errors
/// - [`GranuleError::TooLarge`] when the header claims more than [`MAX_SIDE`] pixels per
///   side (checked before any pixel is allocated);
/// - [`GranuleError::Jp2`] naming `path` when the file is not JPEG 2000, is truncated or
///   corrupt, has more than one component, or has signed or wider-than-16-bit samples.
pub fn decode_u16(bytes: &[u8], path: &Path) -> Result<Raster<u16>, GranuleError> {
    let header = read_header(bytes, path)?;
    if header.components.len() != 1 {
        return Err(err(
            path,
            format!(
                "{} components; a band file must have exactly one (multi-component \
                 JPEG 2000 is refused)",
                header.components.len()
            ),
        ));
    }
    let mut comps = decode_checked(bytes, &header, path)?;
    comps
        .pop()
        .ok_or_else(|| err(path, "decoder returned no component"))
}

/// Decodes every component of a JPEG 2000 file to `u16` (all of the image's size), for
/// multi-component masks.
///
/// # Errors
/// As [`decode_u16`], except that several components are accepted.
pub fn decode_components(bytes: &[u8], path: &Path) -> Result<Vec<Raster<u16>>, GranuleError> {
    let header = read_header(bytes, path)?;
    decode_checked(bytes, &header, path)
}

fn decode_checked(
    bytes: &[u8],
    header: &Header,
    path: &Path,
) -> Result<Vec<Raster<u16>>, GranuleError> {
    check(header, path)?;
    let codec = |e: jpeg2k::error::Error| err(path, format!("OpenJPEG: {e}"));
    let params = DecodeParameters::new().strict(true);
    let image = DumpImage::from_bytes_with(bytes, params).map_err(codec)?;
    // OpenJPEG's own reading of the header must agree with ours; if it does not, the
    // size check above would not protect the allocation below.
    let (w, h) = (image.img.orig_width(), image.img.orig_height());
    if u64::from(w) != header.width
        || u64::from(h) != header.height
        || image.img.components().len() != header.components.len()
    {
        return Err(err(
            path,
            format!(
                "OpenJPEG reads {w}x{h} with {} components, the SIZ marker says {}x{} with {}",
                image.img.components().len(),
                header.width,
                header.height,
                header.components.len()
            ),
        ));
    }
    image.decode().map_err(codec)?;
    let (width, height) = (w as usize, h as usize);
    image
        .img
        .components()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.width() as usize != width || c.height() as usize != height {
                return Err(err(
                    path,
                    format!(
                        "component {i} decoded to {}x{}, expected {width}x{height}",
                        c.width(),
                        c.height()
                    ),
                ));
            }
            // `data()` is valid here: decode succeeded, so OpenJPEG allocated
            // `w * h` samples for each component (and `w * h` fits in u32, see above).
            // Samples of an unsigned ≤16-bit component lie in 0..=65535; clamping only
            // guards against a decoder bug, it never changes a valid sample.
            let data = c
                .data()
                .iter()
                .map(|&v| v.clamp(0, i32::from(u16::MAX)) as u16)
                .collect();
            Raster::from_vec(width, height, data)
                .ok_or_else(|| err(path, format!("component {i} has the wrong sample count")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw codestream prefix: SOC + SIZ for `w`x`h` with `comps` components of `ssiz`.
    fn siz(w: u32, h: u32, comps: &[u8]) -> Vec<u8> {
        let mut b = vec![0xff, 0x4f, 0xff, 0x51];
        b.extend_from_slice(&(38 + 3 * comps.len() as u16).to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes()); // Rsiz
        for v in [w, h, 0, 0, w, h, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&(comps.len() as u16).to_be_bytes());
        for &s in comps {
            b.extend_from_slice(&[s, 1, 1]);
        }
        b
    }

    #[test]
    fn header_reads_size_and_components() {
        let h = read_header(&siz(600, 300, &[15, 7]), Path::new("x.j2k")).unwrap();
        assert_eq!((h.width, h.height), (600, 300));
        assert_eq!(h.components.len(), 2);
        assert_eq!(h.components[0].precision, 16);
        assert_eq!(h.components[1].precision, 8);
        assert!(!h.components[0].signed);
    }

    #[test]
    fn huge_header_is_too_large_before_decoding() {
        let b = siz(100_000, 20, &[15]);
        match decode_u16(&b, Path::new("big.j2k")) {
            Err(GranuleError::TooLarge {
                width,
                height,
                limit,
                path,
            }) => {
                assert_eq!((width, height, limit), (100_000, 20, MAX_SIDE));
                assert_eq!(path, Path::new("big.j2k"));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn refuses_multi_component_signed_and_garbage() {
        let p = Path::new("m.j2k");
        let e = decode_u16(&siz(10, 10, &[7, 7, 7]), p).unwrap_err();
        assert!(e.to_string().contains("3 components"), "{e}");
        let e = decode_u16(&siz(10, 10, &[0x80 | 15]), p).unwrap_err();
        assert!(e.to_string().contains("signed"), "{e}");
        for bad in [&b""[..], b"GIF89a", &[0xff, 0x4f, 0xff], &JP2_SIGNATURE] {
            assert!(matches!(decode_u16(bad, p), Err(GranuleError::Jp2 { .. })));
        }
    }

    #[test]
    fn jp2_box_longer_than_file_is_truncation() {
        let mut b = JP2_SIGNATURE.to_vec();
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(b"jp2c");
        b.extend_from_slice(&siz(10, 10, &[15]));
        let e = read_header(&b, Path::new("t.jp2")).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
