//! The only place with `unsafe` (STYLE.md point 8): system calls and kernel interfaces that the
//! safe crates do not cover. Every `unsafe` block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod caps;
pub mod clock;
pub mod mmsg;
pub mod netns;
pub mod packet;
pub mod proc;
pub mod rawtx;
pub mod sock;
pub mod tun;
