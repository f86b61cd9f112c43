//! Threads and the messages between them (STYLE.md point 7): threads own file descriptors and
//! nothing else; protocol state lives in the engine. Bounded crossbeam channels carry batches of
//! pooled packet buffers; a `mio::Waker` wakes a thread after a send.

pub mod check;
pub mod iface;
pub mod pool;
