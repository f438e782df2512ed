//! Sentinel-2 spectral bands and their native grids.
//!
//! The metadata's `band_id` 0–12 maps in order to B01 B02 B03 B04 B05 B06 B07 B08 B8A
//! B09 B10 B11 B12 (DESIGN.md "Radiometry"). Products never carry B10 (cirrus): it has
//! no surface signal and BigEarthNet dropped it too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One Sentinel-2 MSI band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Band {
    B01,
    B02,
    B03,
    B04,
    B05,
    B06,
    B07,
    B08,
    B8A,
    B09,
    B10,
    B11,
    B12,
}

/// The native grid of a band group. The actual pixel size comes from the granule's
/// georeference: a granule degraded for Wald-protocol evaluation has every pixel size
/// doubled but the same relative factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// The 10 m group (B02 B03 B04 B08); the reference grid of every product.
    #[serde(rename = "10m")]
    R10,
    /// The 20 m group, half the 10 m size.
    #[serde(rename = "20m")]
    R20,
    /// The 60 m group, one sixth of the 10 m size.
    #[serde(rename = "60m")]
    R60,
}

impl Resolution {
    /// All groups, finest first.
    pub const ALL: [Resolution; 3] = [Resolution::R10, Resolution::R20, Resolution::R60];

    /// Pixel size relative to the 10 m grid: 1, 2 or 6.
    pub fn factor(self) -> usize {
        match self {
            Resolution::R10 => 1,
            Resolution::R20 => 2,
            Resolution::R60 => 6,
        }
    }

    /// Nominal pixel size in metres on a standard (not degraded) granule.
    pub fn metres(self) -> u32 {
        match self {
            Resolution::R10 => 10,
            Resolution::R20 => 20,
            Resolution::R60 => 60,
        }
    }

    /// The group whose nominal size is `metres`, if any.
    pub fn from_metres(metres: u32) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.metres() == metres)
    }

    /// The short name used in manifests and reports: `10m`, `20m`, `60m`.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::R10 => "10m",
            Resolution::R20 => "20m",
            Resolution::R60 => "60m",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resolution::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown grid {s:?}: expected 10m, 20m or 60m"))
    }
}

impl Band {
    /// All 13 bands in `band_id` order.
    pub const ALL: [Band; 13] = [
        Band::B01,
        Band::B02,
        Band::B03,
        Band::B04,
        Band::B05,
        Band::B06,
        Band::B07,
        Band::B08,
        Band::B8A,
        Band::B09,
        Band::B10,
        Band::B11,
        Band::B12,
    ];

    /// The 12 bands of products and of BigEarthNet, in their documented order
    /// (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12).
    pub const PRODUCT: [Band; 12] = [
        Band::B01,
        Band::B02,
        Band::B03,
        Band::B04,
        Band::B05,
        Band::B06,
        Band::B07,
        Band::B08,
        Band::B8A,
        Band::B09,
        Band::B11,
        Band::B12,
    ];

    /// The band's name as Sentinel-2 file names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Band::B01 => "B01",
            Band::B02 => "B02",
            Band::B03 => "B03",
            Band::B04 => "B04",
            Band::B05 => "B05",
            Band::B06 => "B06",
            Band::B07 => "B07",
            Band::B08 => "B08",
            Band::B8A => "B8A",
            Band::B09 => "B09",
            Band::B10 => "B10",
            Band::B11 => "B11",
            Band::B12 => "B12",
        }
    }

    /// The metadata `band_id` (0–12).
    pub fn band_id(self) -> u8 {
        Band::ALL.iter().position(|b| *b == self).unwrap_or(0) as u8
    }

    /// The band with metadata `band_id` `id`, if 0–12.
    pub fn from_band_id(id: u8) -> Option<Band> {
        Band::ALL.get(usize::from(id)).copied()
    }

    /// The band's native grid.
    pub fn resolution(self) -> Resolution {
        match self {
            Band::B02 | Band::B03 | Band::B04 | Band::B08 => Resolution::R10,
            Band::B05 | Band::B06 | Band::B07 | Band::B8A | Band::B11 | Band::B12 => {
                Resolution::R20
            }
            Band::B01 | Band::B09 | Band::B10 => Resolution::R60,
        }
    }

    /// Central wavelength in nanometres (Sentinel-2A), for STAC `eo:bands`.
    pub fn centre_wavelength_nm(self) -> u32 {
        match self {
            Band::B01 => 443,
            Band::B02 => 490,
            Band::B03 => 560,
            Band::B04 => 665,
            Band::B05 => 705,
            Band::B06 => 740,
            Band::B07 => 783,
            Band::B08 => 842,
            Band::B8A => 865,
            Band::B09 => 945,
            Band::B10 => 1375,
            Band::B11 => 1610,
            Band::B12 => 2190,
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Band {
    type Err = String;
    /// Accepts `B8A`, `B08`, and the unpadded `B8`/`B1` spellings.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        if let Some(b) = Band::ALL.into_iter().find(|b| b.name() == up) {
            return Ok(b);
        }
        if let Some(num) = up.strip_prefix('B') {
            if let Ok(n) = num.parse::<u8>() {
                let padded = format!("B{n:02}");
                if let Some(b) = Band::ALL.into_iter().find(|b| b.name() == padded) {
                    return Ok(b);
                }
            }
        }
        Err(format!("unknown Sentinel-2 band {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_id_map_follows_the_metadata_order() {
        assert_eq!(Band::from_band_id(8), Some(Band::B8A));
        assert_eq!(Band::from_band_id(10), Some(Band::B10));
        assert_eq!(Band::from_band_id(11), Some(Band::B11));
        assert_eq!(Band::from_band_id(12), Some(Band::B12));
        assert_eq!(Band::from_band_id(13), None);
        for b in Band::ALL {
            assert_eq!(Band::from_band_id(b.band_id()), Some(b));
        }
    }

    #[test]
    fn parses_padded_and_unpadded_names() {
        assert_eq!("B8A".parse::<Band>(), Ok(Band::B8A));
        assert_eq!("b8".parse::<Band>(), Ok(Band::B08));
        assert_eq!("B1".parse::<Band>(), Ok(Band::B01));
        assert!("B13".parse::<Band>().is_err());
    }

    #[test]
    fn product_order_has_no_b10() {
        assert!(!Band::PRODUCT.contains(&Band::B10));
        assert_eq!(Band::PRODUCT[8], Band::B8A);
        assert_eq!(Band::PRODUCT[10], Band::B11);
    }
}
