//! The cryo engine.
#![warn(missing_docs)]
pub mod check;
