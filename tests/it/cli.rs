//! Black-box tests of the `barge` binary.
