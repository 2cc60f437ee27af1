//! The library an application links to learn that it was restored.
#![warn(missing_docs)]
