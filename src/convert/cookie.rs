//! The Cookie TLV contents (skeleton).
