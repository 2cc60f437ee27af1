//! The cryo engine.
#![warn(missing_docs)]
