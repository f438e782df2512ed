//! BigEarthNet nomenclatures (stub).
