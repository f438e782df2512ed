//! A minimal little-endian TIFF / BigTIFF directory serialiser.
//!
//! The COG writer needs full control of where each IFD and each tile lands (IFDs first,
//! then tile data, smallest overview first), which the `tiff` crate's encoder does not
//! give: it writes each IFD after its data. TIFF directories are simple enough to write
//! directly: a count, 12-byte (TIFF) or 20-byte (BigTIFF) entries sorted by tag, the
//! next-IFD offset, then the values that do not fit inline.
//!
//! Invariant: [`Ifd::encoded_len`] depends only on the tags and their value *counts*,
//! never on the values, so the writer can lay the file out with placeholder offsets and
//! fill the real ones in afterwards.

/// A tag value; the variant fixes the TIFF field type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// TIFF type 3, SHORT.
    Short(Vec<u16>),
    /// TIFF type 4, LONG.
    Long(Vec<u32>),
    /// BigTIFF type 16, LONG8.
    Long8(Vec<u64>),
    /// TIFF type 12, DOUBLE.
    Double(Vec<f64>),
    /// TIFF type 2, ASCII; the terminating NUL is added on encoding.
    Ascii(String),
}

impl Value {
    fn type_code(&self) -> u16 {
        match self {
            Value::Short(_) => 3,
            Value::Long(_) => 4,
            Value::Long8(_) => 16,
            Value::Double(_) => 12,
            Value::Ascii(_) => 2,
        }
    }

    fn count(&self) -> u64 {
        match self {
            Value::Short(v) => v.len() as u64,
            Value::Long(v) => v.len() as u64,
            Value::Long8(v) => v.len() as u64,
            Value::Double(v) => v.len() as u64,
            Value::Ascii(s) => s.len() as u64 + 1,
        }
    }

    fn byte_len(&self) -> u64 {
        match self {
            Value::Short(v) => 2 * v.len() as u64,
            Value::Long(v) => 4 * v.len() as u64,
            Value::Long8(v) => 8 * v.len() as u64,
            Value::Double(v) => 8 * v.len() as u64,
            Value::Ascii(s) => s.len() as u64 + 1,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Value::Short(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Long(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Long8(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Double(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Ascii(s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
    }
}

/// Classic TIFF (32-bit offsets) or BigTIFF (64-bit offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    /// Classic TIFF, files below 4 GiB.
    Classic,
    /// BigTIFF.
    Big,
}

impl Flavour {
    /// Length of the file header.
    pub(super) fn header_len(self) -> u64 {
        match self {
            Flavour::Classic => 8,
            Flavour::Big => 16,
        }
    }

    fn entry_len(self) -> u64 {
        match self {
            Flavour::Classic => 12,
            Flavour::Big => 20,
        }
    }

    /// Bytes of an offset (and of the inline value slot).
    fn offset_len(self) -> u64 {
        match self {
            Flavour::Classic => 4,
            Flavour::Big => 8,
        }
    }

    fn count_len(self) -> u64 {
        match self {
            Flavour::Classic => 2,
            Flavour::Big => 8,
        }
    }

    /// The file header pointing at the first IFD.
    pub(super) fn header(self, first_ifd: u64) -> Vec<u8> {
        let mut out = b"II".to_vec();
        match self {
            Flavour::Classic => {
                out.extend_from_slice(&42u16.to_le_bytes());
                out.extend_from_slice(&(first_ifd as u32).to_le_bytes());
            }
            Flavour::Big => {
                out.extend_from_slice(&43u16.to_le_bytes());
                out.extend_from_slice(&8u16.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&first_ifd.to_le_bytes());
            }
        }
        out
    }

    fn put_offset(self, v: u64, out: &mut Vec<u8>) {
        match self {
            Flavour::Classic => out.extend_from_slice(&(v as u32).to_le_bytes()),
            Flavour::Big => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

/// One image file directory.
#[derive(Debug, Clone, Default)]
pub(super) struct Ifd {
    entries: Vec<(u16, Value)>,
}

impl Ifd {
    /// Sets `tag` (replacing an earlier value of the same tag).
    pub(super) fn set(&mut self, tag: u16, value: Value) {
        self.entries.retain(|(t, _)| *t != tag);
        self.entries.push((tag, value));
        self.entries.sort_by_key(|(t, _)| *t);
    }

    /// The value of `tag`, if set.
    #[cfg(test)]
    pub(super) fn get(&self, tag: u16) -> Option<&Value> {
        self.entries.iter().find(|(t, _)| *t == tag).map(|(_, v)| v)
    }

    /// Bytes this IFD occupies, out-of-line values included (each padded to an even
    /// length, as TIFF wants values to start on a word boundary).
    pub(super) fn encoded_len(&self, flavour: Flavour) -> u64 {
        let fixed = flavour.count_len()
            + self.entries.len() as u64 * flavour.entry_len()
            + flavour.offset_len();
        let external: u64 = self
            .entries
            .iter()
            .map(|(_, v)| v.byte_len())
            .filter(|&n| n > flavour.offset_len())
            .map(|n| n + n % 2)
            .sum();
        fixed + external
    }

    /// Appends this IFD, which starts at file offset `at`, to `out`; `next` is the
    /// offset of the following IFD (0 for the last one).
    pub(super) fn encode(&self, flavour: Flavour, at: u64, next: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let n = self.entries.len() as u64;
        match flavour {
            Flavour::Classic => out.extend_from_slice(&(n as u16).to_le_bytes()),
            Flavour::Big => out.extend_from_slice(&n.to_le_bytes()),
        }
        let mut external_at =
            at + flavour.count_len() + n * flavour.entry_len() + flavour.offset_len();
        let mut external = Vec::new();
        for (tag, value) in &self.entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&value.type_code().to_le_bytes());
            flavour.put_offset(value.count(), out);
            let len = value.byte_len();
            if len <= flavour.offset_len() {
                let mut inline = Vec::with_capacity(8);
                value.put(&mut inline);
                inline.resize(flavour.offset_len() as usize, 0);
                out.extend_from_slice(&inline);
            } else {
                flavour.put_offset(external_at, out);
                value.put(&mut external);
                if len % 2 == 1 {
                    external.push(0);
                }
                external_at += len + len % 2;
            }
        }
        flavour.put_offset(next, out);
        out.extend_from_slice(&external);
        debug_assert_eq!((out.len() - start) as u64, self.encoded_len(flavour));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_length_matches_the_bytes_and_ignores_values() {
        for flavour in [Flavour::Classic, Flavour::Big] {
            let mut ifd = Ifd::default();
            ifd.set(256, Value::Long(vec![600]));
            ifd.set(258, Value::Short(vec![16, 16, 16]));
            ifd.set(42113, Value::Ascii("0".into()));
            ifd.set(33550, Value::Double(vec![10.0, 10.0, 0.0]));
            ifd.set(324, Value::Long(vec![0; 5]));
            let len = ifd.encoded_len(flavour);
            let mut out = Vec::new();
            ifd.encode(flavour, 100, 0, &mut out);
            assert_eq!(out.len() as u64, len);
            ifd.set(324, Value::Long(vec![u32::MAX; 5]));
            assert_eq!(ifd.encoded_len(flavour), len);
        }
    }

    #[test]
    fn entries_are_sorted_and_unique() {
        let mut ifd = Ifd::default();
        ifd.set(300, Value::Short(vec![1]));
        ifd.set(256, Value::Short(vec![1]));
        ifd.set(300, Value::Short(vec![2]));
        assert_eq!(ifd.entries.len(), 2);
        assert_eq!(ifd.entries[0].0, 256);
        assert_eq!(ifd.get(300), Some(&Value::Short(vec![2])));
        let mut out = Vec::new();
        ifd.encode(Flavour::Classic, 8, 0, &mut out);
        // count, then the first entry's tag
        assert_eq!(&out[0..4], &[2, 0, 0, 1]);
    }
}
