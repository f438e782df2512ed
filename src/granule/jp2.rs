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
    /// The image's offset on the reference grid (`XOsiz`, `YOsiz`).
    pub origin: (u64, u64),
    /// Tile height on the reference grid (`YTsiz`); the image height for an untiled file.
    pub tile_height: u64,
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
    let yt = be_u32(cs, 28).ok_or_else(short)?;
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
        origin: (u64::from(xo), u64::from(yo)),
        tile_height: u64::from(yt.max(1)),
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
    one_component(&header, path)?;
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
        .map(|(i, c)| component_u16(c, width, height, path, &format!("component {i}")))
        .collect()
}

/// Band files have exactly one component; anything else is refused.
fn one_component(header: &Header, path: &Path) -> Result<(), GranuleError> {
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
    Ok(())
}

/// A decoded component as `u16`, refused unless it is `width`×`height`.
fn component_u16(
    c: &jpeg2k::ImageComponent,
    width: usize,
    height: usize,
    path: &Path,
    what: &str,
) -> Result<Raster<u16>, GranuleError> {
    if c.width() as usize != width || c.height() as usize != height {
        return Err(err(
            path,
            format!(
                "{what} decoded to {}x{}, expected {width}x{height}",
                c.width(),
                c.height()
            ),
        ));
    }
    // `data()` is valid here: decode succeeded, so OpenJPEG allocated `w * h` samples for
    // the component. Samples of an unsigned ≤16-bit component lie in 0..=65535; clamping
    // only guards against a decoder bug, it never changes a valid sample.
    let data = c
        .data()
        .iter()
        .map(|&v| v.clamp(0, i32::from(u16::MAX)) as u16)
        .collect();
    Raster::from_vec(width, height, data)
        .ok_or_else(|| err(path, format!("{what} has the wrong sample count")))
}

/// Where a JPEG 2000 band's bytes come from when it is decoded window by window.
#[derive(Debug)]
pub enum Jp2Input {
    /// A file on disk: OpenJPEG reads it through its own file stream, skipping what the
    /// window does not need, so the compressed bytes are never held whole.
    File(std::path::PathBuf),
    /// The file's bytes (a zip entry, which cannot be read in place).
    Bytes(Vec<u8>),
}

/// How many bytes of a file are read to find its SIZ marker: the boxes before the
/// codestream (signature, header, GML/XML) are a few kB in Sentinel-2 files.
const HEADER_PREFIX: u64 = 1 << 20;

/// A single-component JPEG 2000 band decoded in horizontal windows, top to bottom, with
/// OpenJPEG's decode area: one window per row of codestream tiles (at most
/// [`WINDOW_ROWS`] rows for an untiled file), so a window decodes each tile once.
#[derive(Debug)]
pub struct Jp2Rows {
    input: Jp2Input,
    path: std::path::PathBuf,
    header: Header,
    /// Rows per window.
    step: u64,
    /// The next row (image coordinates).
    next: u64,
}

/// Rows per window of an untiled (or very tall-tiled) JPEG 2000 file.
pub const WINDOW_ROWS: u64 = 1024;

impl Jp2Rows {
    /// Reads the header of `input` and checks it as [`decode_u16`] does.
    ///
    /// # Errors
    /// [`GranuleError::Io`] when the file cannot be read; otherwise as [`decode_u16`].
    pub fn open(input: Jp2Input, path: &Path) -> Result<Jp2Rows, GranuleError> {
        let header = match &input {
            Jp2Input::Bytes(b) => read_header(b, path)?,
            Jp2Input::File(p) => {
                let mut prefix = Vec::new();
                std::fs::File::open(p)
                    .and_then(|f| {
                        std::io::Read::read_to_end(
                            &mut std::io::Read::take(f, HEADER_PREFIX),
                            &mut prefix,
                        )
                    })
                    .map_err(|e| GranuleError::io(p, e))?;
                read_header(&prefix, path)?
            }
        };
        check(&header, path)?;
        one_component(&header, path)?;
        let step = if header.tile_height < header.height {
            header.tile_height.min(WINDOW_ROWS)
        } else {
            WINDOW_ROWS
        };
        Ok(Jp2Rows {
            input,
            path: path.to_path_buf(),
            header,
            step,
            next: 0,
        })
    }

    /// Columns and rows.
    pub fn size(&self) -> (usize, usize) {
        // Both are at most MAX_SIDE (checked in `open`).
        (self.header.width as usize, self.header.height as usize)
    }

    /// Decodes the next window of rows (all columns); `None` after the last.
    ///
    /// # Errors
    /// [`GranuleError::Jp2`] naming the file when OpenJPEG fails or returns a window of
    /// another size.
    pub fn next_rows(&mut self) -> Result<Option<Raster<u16>>, GranuleError> {
        let (w, h) = (self.header.width, self.header.height);
        if self.next >= h {
            return Ok(None);
        }
        // Windows end on multiples of the tile height of the reference grid, which are
        // tile boundaries when the tiles start at 0 (YTOsiz = 0, as in Sentinel-2 files).
        let y0 = self.next;
        let y1 = (y0 + self.step - (self.header.origin.1 + y0) % self.step).min(h);
        let path = self.path.as_path();
        let codec = |e: jpeg2k::error::Error| err(path, format!("OpenJPEG: {e}"));
        let (ox, oy) = self.header.origin;
        let to_u32 = |v: u64| u32::try_from(v).map_err(|_| err(path, "window beyond 2^32"));
        let area = jpeg2k::DecodeArea::new(
            to_u32(ox)?,
            to_u32(oy + y0)?,
            to_u32(ox + w)?,
            to_u32(oy + y1)?,
        );
        let params = DecodeParameters::new().strict(true).decode_area(Some(area));
        let image = match &self.input {
            Jp2Input::Bytes(b) => jpeg2k::Image::from_bytes_with(b, params),
            Jp2Input::File(p) => jpeg2k::Image::from_file_with(p, params),
        }
        .map_err(codec)?;
        let comps = image.components();
        let [c] = comps else {
            return Err(err(
                path,
                format!("OpenJPEG decoded {} components", comps.len()),
            ));
        };
        let r = component_u16(
            c,
            w as usize,
            (y1 - y0) as usize,
            path,
            &format!("window rows {y0}..{y1}"),
        )?;
        self.next = y1;
        Ok(Some(r))
    }
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
