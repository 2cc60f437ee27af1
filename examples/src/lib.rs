//! Runnable scenarios live in examples/.
