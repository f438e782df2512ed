//! product (being written).
