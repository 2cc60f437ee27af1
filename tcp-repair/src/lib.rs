//! Capture and restore of one TCP connection with TCP_REPAIR.
#![warn(missing_docs)]
