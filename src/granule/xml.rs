//! Hardened XML parsing (stub).
