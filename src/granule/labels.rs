//! The BigEarthNet v1 land-cover nomenclatures: the 43 CORINE Land Cover level-3 names
//! the patch files carry, the 19-class nomenclature the classifier predicts, and the map
//! between them (DESIGN.md "Reference facts").
//!
//! Invariants: [`NAMES_43`] and [`NAMES_19`] are in the official index order, so an index
//! is a stable class id across training, inference and evaluation. Classes 3–10, 30, 32
//! and 37 have no 19-class target and are dropped by [`classes_19`].

use super::PatchLabels;

/// The 43-class names in index order, spelled as BigEarthNet v1 patch files spell them.
pub const NAMES_43: [&str; 43] = [
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
];

/// The 19-class names in the official order (the classifier's output order).
pub const NAMES_19: [&str; 19] = [
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
];

/// The 19-class target of each 43-class index (`None`: the class has no target).
const MAP_43_TO_19: [Option<u8>; 43] = [
    Some(0),  // 0 Continuous urban fabric
    Some(0),  // 1 Discontinuous urban fabric
    Some(1),  // 2 Industrial or commercial units
    None,     // 3 Road and rail networks
    None,     // 4 Port areas
    None,     // 5 Airports
    None,     // 6 Mineral extraction sites
    None,     // 7 Dump sites
    None,     // 8 Construction sites
    None,     // 9 Green urban areas
    None,     // 10 Sport and leisure facilities
    Some(2),  // 11 Non-irrigated arable land
    Some(2),  // 12 Permanently irrigated land
    Some(2),  // 13 Rice fields
    Some(3),  // 14 Vineyards
    Some(3),  // 15 Fruit trees and berry plantations
    Some(3),  // 16 Olive groves
    Some(4),  // 17 Pastures
    Some(3),  // 18 Annual crops associated with permanent crops
    Some(5),  // 19 Complex cultivation patterns
    Some(6),  // 20 Land principally occupied by agriculture, ...
    Some(7),  // 21 Agro-forestry areas
    Some(8),  // 22 Broad-leaved forest
    Some(9),  // 23 Coniferous forest
    Some(10), // 24 Mixed forest
    Some(11), // 25 Natural grassland
    Some(12), // 26 Moors and heathland
    Some(12), // 27 Sclerophyllous vegetation
    Some(13), // 28 Transitional woodland/shrub
    Some(14), // 29 Beaches, dunes, sands
    None,     // 30 Bare rock
    Some(11), // 31 Sparsely vegetated areas
    None,     // 32 Burnt areas
    Some(15), // 33 Inland marshes
    Some(15), // 34 Peatbogs
    Some(16), // 35 Salt marshes
    Some(16), // 36 Salines
    None,     // 37 Intertidal flats
    Some(17), // 38 Water courses
    Some(17), // 39 Water bodies
    Some(18), // 40 Coastal lagoons
    Some(18), // 41 Estuaries
    Some(18), // 42 Sea and ocean
];

/// A label name that is not in the 43-class nomenclature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown BigEarthNet label {0:?} (not one of the 43 class names)")]
pub struct UnknownLabel(pub String);

/// The 19-class index of 43-class index `idx43`; `None` for the classes without a
/// target (3–10, 30, 32, 37) and for indices ≥ 43.
pub fn class_19_of(idx43: u8) -> Option<u8> {
    MAP_43_TO_19.get(usize::from(idx43)).copied().flatten()
}

/// The 43-class index of `name` (exact spelling, surrounding whitespace ignored).
pub fn index_43(name: &str) -> Option<u8> {
    let name = name.trim();
    NAMES_43.iter().position(|n| *n == name).map(|i| i as u8)
}

/// The 19-class indices of a set of 43-class indices: mapped, sorted, deduplicated;
/// classes without a target are dropped (so the result may be empty).
pub fn classes_19(classes_43: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = classes_43.iter().filter_map(|c| class_19_of(*c)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Resolves a patch's label names to both nomenclatures.
///
/// # Errors
/// [`UnknownLabel`] for the first name that is not a 43-class name.
pub fn to_19(names: &[String]) -> Result<PatchLabels, UnknownLabel> {
    let classes_43 = names
        .iter()
        .map(|n| index_43(n).ok_or_else(|| UnknownLabel(n.clone())))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(PatchLabels {
        names_43: names.to_vec(),
        classes_19: classes_19(&classes_43),
        classes_43,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_follows_the_reference_table() {
        for (idx43, idx19) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (11, 2),
            (12, 2),
            (13, 2),
            (14, 3),
            (15, 3),
            (16, 3),
            (18, 3),
            (17, 4),
            (19, 5),
            (20, 6),
            (21, 7),
            (22, 8),
            (23, 9),
            (24, 10),
            (25, 11),
            (31, 11),
            (26, 12),
            (27, 12),
            (28, 13),
            (29, 14),
            (33, 15),
            (34, 15),
            (35, 16),
            (36, 16),
            (38, 17),
            (39, 17),
            (40, 18),
            (41, 18),
            (42, 18),
        ] {
            assert_eq!(class_19_of(idx43), Some(idx19), "43-class {idx43}");
        }
        for unmapped in (3..=10).chain([30, 32, 37, 43, 255]) {
            assert_eq!(class_19_of(unmapped), None, "43-class {unmapped}");
        }
        // Every 19-class index is the target of at least one 43-class index.
        for c in 0..19u8 {
            assert!((0..43u8).any(|i| class_19_of(i) == Some(c)), "19-class {c}");
        }
    }

    #[test]
    fn names_resolve_and_same_name_classes_agree() {
        assert_eq!(index_43("Transitional woodland/shrub"), Some(28));
        assert_eq!(index_43(" Sea and ocean "), Some(42));
        assert_eq!(index_43("Transitional woodland, shrub"), None);
        // Classes whose name is unchanged between the nomenclatures map onto themselves.
        for (i, n) in NAMES_43.iter().enumerate() {
            if let Some(j) = NAMES_19.iter().position(|m| m == n) {
                assert_eq!(class_19_of(i as u8), Some(j as u8), "{n}");
            }
        }
        let labels = to_19(&[
            "Coniferous forest".to_string(),
            "Mixed forest".into(),
            "Bare rock".into(),
            "Peatbogs".into(),
            "Inland marshes".into(),
        ])
        .unwrap();
        assert_eq!(labels.classes_43, vec![23, 24, 30, 34, 33]);
        assert_eq!(labels.classes_19, vec![9, 10, 15]);
        assert_eq!(
            to_19(&["Moon base".to_string()]),
            Err(UnknownLabel("Moon base".into()))
        );
    }
}
