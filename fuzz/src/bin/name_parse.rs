//! Fuzz target: the one name check, and what an accepted name promises.
use std::path::{Component, Path};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(name) = barge::name::FileName::parse(s) {
            assert!(
                Path::new(name.as_str())
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "{s:?} is not a plain relative path"
            );
            assert!(
                !s.contains('\\') && !s.chars().any(char::is_control),
                "{s:?}"
            );
            assert!(s.split('/').next() != Some(barge::name::STATE_DIR), "{s:?}");
            assert!(!name.to_string().chars().any(char::is_control), "{s:?}");
        }
    });
}
