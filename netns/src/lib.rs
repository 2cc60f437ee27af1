//! Network namespaces and the network lock.
#![warn(missing_docs)]
