//! sock_diag/unix_diag queries, non-consuming queue capture and the graph of connected unix sockets.
#![warn(missing_docs)]
