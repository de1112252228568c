//! A typed async client for the barge protocol (being written).
