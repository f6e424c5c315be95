//! UNO objectives (issue #4 fills this crate).
