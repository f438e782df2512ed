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
fn codestream<'b>(bytes: &'b [u8], path: &Path, whole: bool) -> Result<&'b [u8], GranuleError> {
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
        // A prefix of the file (`whole` false) ends inside the codestream box.
        let end = off
            .checked_add(len)
            .map(|e| {
                if !whole && tbox == b"jp2c" {
                    e.min(total)
                } else {
                    e
                }
            })
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
    header_of(bytes, path, true)
}

/// [`read_header`] on the first bytes of a file ([`HEADER_PREFIX`]), which may end inside
/// the codestream.
fn read_header_prefix(prefix: &[u8], path: &Path) -> Result<Header, GranuleError> {
    header_of(prefix, path, false)
}

fn header_of(bytes: &[u8], path: &Path, whole: bool) -> Result<Header, GranuleError> {
    let cs = codestream(bytes, path, whole)?;
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

/// Where a JPEG 2000 band comes from when it is decoded window by window: always a
/// file, which OpenJPEG reads through its own file stream, skipping what the window does
/// not need, so the compressed bytes are never held whole. (The `jpeg2k` crate's memory
/// stream cannot serve decode areas: its skip callback returns the new offset instead of
/// the bytes skipped, and OpenJPEG then fails with "Stream too short" on any band of more
/// than one tile row.)
#[derive(Debug, Clone)]
pub enum Jp2Input {
    /// A file on disk.
    File(std::path::PathBuf),
    /// A zip entry unpacked to a temporary file ([`super::unpack`]); deleted when the
    /// last reader drops it.
    Unpacked(std::sync::Arc<tempfile::NamedTempFile>),
}

impl Jp2Input {
    /// The file OpenJPEG reads.
    fn path(&self) -> &Path {
        match self {
            Jp2Input::File(p) => p,
            Jp2Input::Unpacked(f) => f.path(),
        }
    }
}

/// How many bytes of a file are read to find its SIZ marker: the boxes before the
/// codestream (signature, header, GML/XML) are a few kB in Sentinel-2 files.
const HEADER_PREFIX: u64 = 1 << 20;

/// A single-component JPEG 2000 band decoded in horizontal windows, top to bottom, with
/// OpenJPEG's decode area: one window per row of codestream tiles (at most
/// [`WINDOW_ROWS`] rows for an untiled file), so a window decodes each tile once. The
/// decode area spans only [`Jp2Rows::columns`], so OpenJPEG skips the tiles (and, inside
/// a tile, the code blocks) that lie outside them.
#[derive(Debug)]
pub struct Jp2Rows {
    input: Jp2Input,
    path: std::path::PathBuf,
    header: Header,
    /// Rows per window.
    step: u64,
    /// The columns each window is decoded for, in image coordinates (`0..width` unless
    /// restricted by [`Jp2Rows::set_columns`]); the image offset is added when the
    /// decode area is built.
    columns: std::ops::Range<usize>,
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
        let file = input.path();
        let mut prefix = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, HEADER_PREFIX), &mut prefix)
            })
            .map_err(|e| GranuleError::io(file, e))?;
        let header = read_header_prefix(&prefix, path)?;
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
            columns: 0..header.width as usize,
            header,
            step,
            next: 0,
        })
    }

    /// Restricts every later window to the columns `columns` of the image: OpenJPEG's
    /// decode area then spans only them.
    ///
    /// # Errors
    /// [`GranuleError::Jp2`] naming the file when the range is empty or reaches beyond
    /// the width, or when a window was already decoded.
    pub fn set_columns(&mut self, columns: std::ops::Range<usize>) -> Result<(), GranuleError> {
        if self.next > 0 {
            return Err(err(
                &self.path,
                format!(
                    "column range {}..{} set after rows 0..{} were decoded",
                    columns.start, columns.end, self.next
                ),
            ));
        }
        if let Some(reason) = super::rows::bad_columns(&columns, self.size().0) {
            return Err(err(&self.path, reason));
        }
        self.columns = columns;
        Ok(())
    }

    /// The columns each window holds.
    pub fn columns(&self) -> std::ops::Range<usize> {
        self.columns.clone()
    }

    /// Columns and rows.
    pub fn size(&self) -> (usize, usize) {
        // Both are at most MAX_SIDE (checked in `open`).
        (self.header.width as usize, self.header.height as usize)
    }

    /// Decodes the next window of rows, columns [`Jp2Rows::columns`]; `None` after the
    /// last.
    ///
    /// # Errors
    /// [`GranuleError::Jp2`] naming the file when OpenJPEG fails or returns a window of
    /// another size.
    pub fn next_rows(&mut self) -> Result<Option<Raster<u16>>, GranuleError> {
        let h = self.header.height;
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
        // The range lies within the width (`set_columns`), which is at most MAX_SIDE.
        let (x0, x1) = (self.columns.start as u64, self.columns.end as u64);
        let area = jpeg2k::DecodeArea::new(
            to_u32(ox + x0)?,
            to_u32(oy + y0)?,
            to_u32(ox + x1)?,
            to_u32(oy + y1)?,
        );
        let params = DecodeParameters::new().strict(true).decode_area(Some(area));
        let image = jpeg2k::Image::from_file_with(self.input.path(), params).map_err(codec)?;
        let comps = image.components();
        let [c] = comps else {
            return Err(err(
                path,
                format!("OpenJPEG decoded {} components", comps.len()),
            ));
        };
        let r = component_u16(
            c,
            self.columns.len(),
            (y1 - y0) as usize,
            path,
            &format!("window rows {y0}..{y1}, columns {x0}..{x1}"),
        )?;
        self.next = y1;
        Ok(Some(r))
    }
}

/// Encodes `data` (`w`×`h` uint16, row-major) losslessly to a JP2 file in `dir` with
/// `opj_compress` (Debian's `libopenjp2-tools`, installed by `scripts/setup.sh`), passing
/// `args` (tiling `-t`, image offset `-d`, resolutions `-n` ...), for tests of the
/// JPEG 2000 readers. `None`, with a printed skip message, when the tool is absent;
/// under `CI` its absence fails the test instead, as `tests/util.rs` does.
#[cfg(test)]
pub(crate) fn opj_encode_for_tests(
    w: usize,
    h: usize,
    data: &[u16],
    dir: &Path,
    args: &[&str],
    test: &str,
) -> Option<std::path::PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/opj_compress");
    let tool = std::iter::once(venv)
        .chain(
            std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .map(|d| Path::new(d).join("opj_compress"))
                .collect::<Vec<_>>(),
        )
        .find(|p| p.is_file());
    let Some(tool) = tool else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: opj_compress is required in CI (run scripts/setup.sh)"
        );
        eprintln!("SKIP {test}: opj_compress is absent (apt install libopenjp2-tools)");
        return None;
    };
    // A 16-bit PGM: big-endian samples, maxval 65535.
    let mut pgm = format!("P5\n{w} {h}\n65535\n").into_bytes();
    for v in data {
        pgm.extend_from_slice(&v.to_be_bytes());
    }
    let (src, dst) = (dir.join("src.pgm"), dir.join(format!("{test}.jp2")));
    std::fs::write(&src, pgm).ok()?;
    let out = std::process::Command::new(tool)
        .arg("-i")
        .arg(&src)
        .arg("-o")
        .arg(&dst)
        .args(args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "opj_compress {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dst)
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

    /// Reads columns `columns` of a JPEG 2000 band through [`Jp2Rows`], window by window,
    /// checking every window's width.
    fn read_columns(
        input: Jp2Input,
        columns: std::ops::Range<usize>,
    ) -> Result<Raster<u16>, GranuleError> {
        let mut rows = Jp2Rows::open(input, Path::new("c.jp2"))?;
        rows.set_columns(columns.clone())?;
        assert_eq!(rows.columns(), columns);
        let (mut data, mut height) = (Vec::new(), 0);
        while let Some(r) = rows.next_rows()? {
            assert_eq!(r.width, columns.len());
            data.extend_from_slice(&r.data);
            height += r.height;
        }
        Ok(Raster::from_vec(columns.len(), height, data).unwrap())
    }

    /// A pseudo-random `w`×`h` band (incompressible, so its file is large) encoded
    /// losslessly in 256-px tiles, with its samples, or `None` (SKIP) without opj_compress.
    fn noisy_tiled_band(
        dir: &Path,
        w: usize,
        h: usize,
        test: &str,
    ) -> Option<(std::path::PathBuf, Vec<u16>)> {
        let mut x = 12345u32;
        let data: Vec<u16> = (0..w * h)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u16
            })
            .collect();
        let path = opj_encode_for_tests(w, h, &data, dir, &["-t", "256,256"], test)?;
        Some((path, data))
    }

    #[test]
    fn files_longer_than_the_header_prefix_open_and_decode_by_windows() {
        // Real bands are 20–250 MB: the header is read from a prefix of HEADER_PREFIX
        // bytes, which ends inside the codestream box; and the windows of a band of
        // several tile rows and columns skip the tiles outside them.
        let dir = tempfile::tempdir().unwrap();
        let test = "jp2_files_longer_than_the_header_prefix";
        let (w, h) = (1024, 768);
        let Some((path, data)) = noisy_tiled_band(dir.path(), w, h, test) else {
            return;
        };
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > HEADER_PREFIX, "{len} bytes");
        for (a, b) in [(0, w), (300, 900), (1000, w)] {
            let want = super::super::tiff::crop_columns_for_tests(&data, w, a..b);
            let r = read_columns(Jp2Input::File(path.clone()), a..b).unwrap();
            assert_eq!((r.width, r.height), (b - a, h));
            assert!(r.data == want, "columns {a}..{b} differ");
        }
    }

    #[test]
    fn column_ranges_match_the_whole_band() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 7919 % 65536) as u16).collect();
        // 16-px tiles; then the same with an image offset, so tiles and windows start
        // off the image's origin, as the decode area must allow for.
        for (k, args) in [
            &["-t", "16,16", "-n", "3"][..],
            &["-t", "16,16", "-n", "3", "-d", "3,5"][..],
            &[][..],
        ]
        .iter()
        .enumerate()
        {
            let test = format!("jp2_column_ranges_{k}");
            let Some(path) = opj_encode_for_tests(w, h, &data, dir.path(), args, &test) else {
                return;
            };
            let bytes = std::fs::read(&path).unwrap();
            let whole = decode_u16(&bytes, &path).unwrap();
            assert_eq!(whole.data, data, "{args:?}: lossless");
            let mut copy = tempfile::Builder::new().suffix(".jp2").tempfile().unwrap();
            std::io::Write::write_all(&mut copy, &bytes).unwrap();
            let copy = std::sync::Arc::new(copy);
            for (a, b) in [(0, 1), (36, 37), (16, 32), (15, 17), (10, 35), (0, 37)] {
                let want = crate::granule::tiff::crop_columns_for_tests(&whole.data, w, a..b);
                for input in [
                    Jp2Input::File(path.clone()),
                    Jp2Input::Unpacked(std::sync::Arc::clone(&copy)),
                ] {
                    let r = read_columns(input, a..b).unwrap();
                    assert_eq!(r.height, h);
                    assert_eq!(r.data, want, "{args:?}, columns {a}..{b}");
                }
            }
        }
    }

    #[test]
    fn bad_column_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let args = ["-t", "16,16", "-n", "3"];
        let test = "jp2_bad_column_ranges";
        let Some(path) = opj_encode_for_tests(w, h, &vec![9; w * h], dir.path(), &args, test)
        else {
            return;
        };
        let mut rows = Jp2Rows::open(Jp2Input::File(path), Path::new("b.jp2")).unwrap();
        assert_eq!(rows.columns(), 0..w, "all columns by default");
        for ((a, b), why) in [
            ((5, 5), "empty"),
            ((6, 5), "empty"),
            ((0, 38), "beyond"),
            ((37, 38), "beyond"),
        ] {
            match rows.set_columns(a..b) {
                Err(GranuleError::Jp2 { path, reason }) => {
                    assert_eq!(path, Path::new("b.jp2"));
                    assert!(reason.contains(why), "{a}..{b}: {reason}");
                }
                other => panic!("columns {a}..{b}: {other:?}"),
            }
        }
        rows.set_columns(20..37).unwrap();
        assert_eq!(rows.next_rows().unwrap().unwrap().width, 17);
        let e = rows.set_columns(0..w).unwrap_err();
        assert!(e.to_string().contains("after"), "{e}");
    }

    /// Overwrites the body (after SOD) of codestream tile `tile` with 0xFF bytes, which
    /// OpenJPEG refuses in strict mode; other tiles keep their bytes and places.
    fn corrupt_tile(bytes: &mut [u8], tile: u16) {
        let sot = [0xff, 0x90, 0x00, 0x0a];
        // The first SOT ends the main header; from there each SOT's Psot finds the next.
        let mut at = bytes.windows(4).position(|w| w == sot).unwrap();
        loop {
            assert_eq!(bytes[at..at + 4], sot, "a tile part starts at {at}");
            let isot = u16::from_be_bytes([bytes[at + 4], bytes[at + 5]]);
            let psot = u32::from_be_bytes(bytes[at + 6..at + 10].try_into().unwrap()) as usize;
            if isot == tile {
                let sod = at
                    + bytes[at..]
                        .windows(2)
                        .position(|w| w == [0xff, 0x93])
                        .unwrap();
                bytes[sod + 2..at + psot].fill(0xff);
                return;
            }
            at += psot;
        }
    }

    #[test]
    fn tiles_outside_the_column_range_are_not_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 7919 % 65536) as u16).collect();
        // The image starts at (3, 5) of the reference grid, so 16-px tile column 2 (grid
        // x 32..48) holds image columns 29..37; tile 5 is tile row 1, tile column 2.
        let args = ["-t", "16,16", "-n", "3", "-d", "3,5"];
        let test = "jp2_tiles_outside_the_column_range";
        let Some(path) = opj_encode_for_tests(w, h, &data, dir.path(), &args, test) else {
            return;
        };
        let mut bytes = std::fs::read(&path).unwrap();
        corrupt_tile(&mut bytes, 5);
        let e = decode_u16(&bytes, &path).unwrap_err();
        assert!(matches!(e, GranuleError::Jp2 { .. }), "{e}");
        let corrupt = dir.path().join("corrupt.jp2");
        std::fs::write(&corrupt, &bytes).unwrap();
        for (a, b) in [(0, 29), (13, 29), (28, 29)] {
            let r = read_columns(Jp2Input::File(corrupt.clone()), a..b).unwrap();
            let want = crate::granule::tiff::crop_columns_for_tests(&data, w, a..b);
            assert_eq!(r.data, want, "columns {a}..{b}");
        }
        for (a, b) in [(29, 37), (28, 30), (0, 37)] {
            match read_columns(Jp2Input::File(corrupt.clone()), a..b) {
                Err(GranuleError::Jp2 { path, reason }) => {
                    assert_eq!(path, Path::new("c.jp2"));
                    assert!(reason.contains("OpenJPEG"), "{reason}");
                }
                other => panic!("columns {a}..{b}: {other:?}"),
            }
        }
    }
}
